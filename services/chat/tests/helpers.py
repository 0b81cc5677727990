"""Helpers for the chat tests (plain functions and constants; the fixtures are in conftest.py):
an LLM emulator served over real HTTP and the chat settings that point at it.

A helper used by one service's tests lives in its tests/helpers.py (summarizing.py holds the
summarization tests' own); one shared across directories in the top-level tests/helpers.py.
Tests never import from a conftest."""

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators import ollama, openai_compat
from avatar_emulators.replies import ChatEmulatorConfig, PromptRecorder
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import Identity
from tests.helpers import TEST_USER_HEADER

PERSONA = "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함."

VLLM_KEY = "test-key"
VLLM_PREFIX = "/vllm"


@dataclass
class Backend:
    name: str
    recorder: PromptRecorder
    settings: dict[str, Any]
    config: ChatEmulatorConfig | None = None  # read per request: a test may change it


@contextmanager
def emulated_llm(name: str, **config: Any) -> Iterator[Backend]:
    """An LLM emulator on a free port and the chat settings that point at it. vLLM runs with
    an API key and a path prefix, so both are always exercised."""
    if name == "ollama":
        emulator: ChatEmulatorConfig = ollama.OllamaConfig(**config)
        app = ollama.create_app(emulator)
    else:
        emulator = openai_compat.OpenAICompatConfig(
            api_key=VLLM_KEY, path_prefix=VLLM_PREFIX, **config
        )
        app = openai_compat.create_app(emulator)
    with serve_in_thread(app) as url:
        settings = (
            {"llm_service": "ollama", "ollama_base_url": url}
            if name == "ollama"
            else {
                "llm_service": "vllm",
                "vllm_base_url": url + VLLM_PREFIX,
                "vllm_api_key": VLLM_KEY,
            }
        )
        yield Backend(name, emulator.recorder, settings, emulator)


def ask(text: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], "persona": PERSONA, **extra}


async def read_events(response) -> list[tuple[str, dict]]:
    events, kind = [], None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


FAST_TIMEOUTS = {"llm_connect_timeout_s": 0.5, "llm_read_timeout_s": 0.5}


def chat_settings(redis_url: str, **llm: object) -> ChatSettings:
    return ChatSettings(
        redis_url=redis_url, characters_url=f"http://127.0.0.1:{free_port()}", **llm
    )


TEST_ADDRESS_HEADER = "X-Test-Address"
TEST_ANONYMOUS_HEADER = "X-Test-Anonymous"


async def callers_from_test_headers(request: Request) -> Identity:
    """Stands in for `current_identity` where a test speaks as callers of chosen client
    addresses: `as_anonymous(name, address)`, `as_signed_in(name, address)`, and
    `as_user(name)` (signed in, no address). Forwarded to a peer that stands in the same way
    (the characters service in some tests), they name the same caller there, as the caller's
    credentials do in production."""
    test_headers = (TEST_USER_HEADER, TEST_ANONYMOUS_HEADER, TEST_ADDRESS_HEADER)
    return Identity(
        request.headers.get(TEST_USER_HEADER, "anon-x"),
        signed_in=TEST_ANONYMOUS_HEADER not in request.headers,
        forward_headers={h: request.headers[h] for h in test_headers if h in request.headers},
        address=request.headers.get(TEST_ADDRESS_HEADER, "-"),
    )


def as_anonymous(name: str, address: str) -> dict[str, str]:
    return {**as_signed_in(name, address), TEST_ANONYMOUS_HEADER: "1"}


def as_signed_in(name: str, address: str) -> dict[str, str]:
    return {TEST_USER_HEADER: name, TEST_ADDRESS_HEADER: address}


async def no_turn_in_flight(redis: Any) -> None:
    """Waits until every turn's lease has ended (a stopped one's teardown is over)."""
    for _ in range(200):
        leases = await redis.keys("chat:calls-of:*")
        if not any([await redis.zcard(key) for key in leases]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a turn is still in flight")
