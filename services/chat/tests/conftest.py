"""Chat service fixtures: the chat app in-process against a real Redis and an LLM emulator
served over real HTTP, once per backend (the suite runs for Ollama and for vLLM)."""

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators import ollama, openai_compat
from avatar_emulators.replies import ChatEmulatorConfig, PromptRecorder
from avatar_emulators.server import serve_in_thread

VLLM_KEY = "test-key"
VLLM_PREFIX = "/vllm"


@dataclass
class Backend:
    name: str
    recorder: PromptRecorder
    settings: dict[str, Any]


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
        yield Backend(name, emulator.recorder, settings)


@pytest.fixture(params=["ollama", "vllm"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend(backend_name: str) -> Iterator[Backend]:
    with emulated_llm(backend_name) as backend:
        yield backend


@pytest.fixture
async def chat(app_client, redis_url: str, backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """The chat app wired to the emulator; at the characters and tts URLs nobody listens."""
    settings = ChatSettings(
        redis_url=redis_url,
        characters_url=f"http://127.0.0.1:{free_port()}",
        tts_url=f"http://127.0.0.1:{free_port()}",
        chat_rate_per_min=10_000,  # the rate limit has its own test
        **backend.settings,
    )
    async with app_client(create_app(settings)) as client:
        yield client
