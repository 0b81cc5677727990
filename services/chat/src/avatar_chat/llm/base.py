"""What every LLM client shares: the request and reply types, the interface, and the
translation of transport and HTTP failures into the service's errors."""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from avatar_chat.errors import LlmError, LlmTimeout, LlmUnavailable, ModelNotFound
from avatar_chat.llm.wire import failed, json_object, malformed, upstream_message
from avatar_chat.settings import ChatSettings
from avatar_shared.metrics import upstream_call


@dataclass(frozen=True)
class LlmRequest:
    model: str
    messages: list[dict[str, str]]  # the system message first
    temperature: float
    max_tokens: int
    context_tokens: int  # the window planned for: sent to Ollama as num_ctx


@dataclass(frozen=True)
class LlmReply:
    content: str
    prompt_tokens: int
    completion_tokens: int


class LlmClient(ABC):
    def __init__(self, http: httpx.AsyncClient, settings: ChatSettings) -> None:
        self.http = http
        self.settings = settings

    @abstractmethod
    async def complete(self, request: LlmRequest) -> LlmReply: ...

    @abstractmethod
    def stream(self, request: LlmRequest) -> AsyncIterator[str | LlmReply]:
        """Text deltas as the model produces them, then one LlmReply with the whole reply."""

    @abstractmethod
    async def model_names(self) -> list[str]: ...

    @abstractmethod
    async def trained_context(self, model: str) -> int | None:
        """The model's context length as the server reports it, or None when it does not."""

    async def _post_json(self, url: str, payload: dict[str, Any], model: str) -> dict[str, Any]:
        """One whole request/response exchange, bounded by the total timeout."""
        with upstream_call("llm"):
            with llm_failures():
                async with asyncio.timeout(self.settings.llm_total_timeout_s):
                    response = await self.http.post(url, json=payload, headers=self._headers())
            await check_status(response, model)
            return _json_object(response)

    async def _get_json(self, url: str) -> dict[str, Any]:
        with llm_failures():
            async with asyncio.timeout(self.settings.llm_total_timeout_s):
                response = await self.http.get(url, headers=self._headers())
        await check_status(response, None)
        return _json_object(response)

    async def _model_entries(self, url: str, key: str) -> list[dict[str, Any]]:
        """The model objects the server lists under `key` (no list there: a 502)."""
        models = (await self._get_json(url)).get(key)
        if not isinstance(models, list):
            raise malformed("model list")
        return [model for model in models if isinstance(model, dict)]

    async def _stream_lines(
        self, url: str, payload: dict[str, Any], model: str
    ) -> AsyncIterator[str]:
        """The response body line by line. The total timeout is checked between lines (an
        asyncio.timeout cannot span the yields of a generator); each wait is bounded by the
        read timeout. Closing the generator closes the upstream request."""
        deadline = asyncio.get_running_loop().time() + self.settings.llm_total_timeout_s
        with upstream_call("llm"), llm_failures():
            async with self.http.stream(
                "POST", url, json=payload, headers=self._headers()
            ) as response:
                await check_status(response, model)
                async for line in response.aiter_lines():
                    if asyncio.get_running_loop().time() > deadline:
                        raise LlmTimeout()
                    if line.strip():
                        yield line

    def _headers(self) -> dict[str, str]:
        return {}


def _json_object(response: httpx.Response) -> dict[str, Any]:
    return json_object(response.content, "response")


@contextmanager
def llm_failures() -> Iterator[None]:
    """Unreachable -> 503, too slow -> 504, broken off mid-answer -> 502."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise LlmTimeout() from exc
    except httpx.ConnectError as exc:
        raise LlmUnavailable() from exc
    except httpx.TransportError as exc:  # it answered, then broke off
        raise LlmError("The language model server broke off its answer.") from exc


async def check_status(response: httpx.Response, model: str | None) -> None:
    """Raise for an error status (its body, read from a stream too, goes to the log)."""
    if response.status_code < 400:
        return
    await response.aread()
    if response.status_code == 404 and model:
        raise ModelNotFound(model)
    raise failed(upstream_message(response), response.status_code)
