"""Chat service fixtures: the chat app in-process against a real Redis and an LLM emulator
served over real HTTP, once per backend (the suite runs for Ollama and for vLLM)."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import current_identity

from .helpers import Backend, callers_from_test_headers, emulated_llm


@pytest.fixture(params=["ollama", "vllm"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend(backend_name: str) -> Iterator[Backend]:
    with emulated_llm(backend_name) as backend:
        yield backend


@pytest.fixture(scope="module")
def characters_url(redis_url: str) -> Iterator[str]:
    """The real characters service, its callers as the tests name them (chat asks it for
    characters, personas, greetings, and the caller's default persona when a conversation it
    keeps starts)."""
    characters = characters_app(CharactersSettings(redis_url=redis_url))
    characters.dependency_overrides[current_identity] = callers_from_test_headers
    with serve_in_thread(characters, lifespan="on") as url:
        yield url


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
