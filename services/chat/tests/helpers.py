"""Helpers for the chat tests (plain functions and constants; the fixtures are in conftest.py):
an LLM emulator served over real HTTP and the chat settings that point at it.

A helper used by one service's tests lives in its tests/helpers.py (summarizing.py holds the
summarization tests' own); one shared across directories in the top-level tests/helpers.py.
Tests never import from a conftest."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
