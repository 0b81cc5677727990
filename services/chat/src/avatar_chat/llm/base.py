"""What every LLM client shares: the request and reply types, the interface, the HTTP
session, the exchange and the streaming loop, and the translation of transport and HTTP
failures into the service's errors. A provider gives only what differs: its URLs, the request
body (`payload`), and how to read a whole reply (`parse_reply`) and a streamed line
(`parse_line`).

The LLM call is the hottest call of the service, so it goes through aiohttp rather than
httpx (the peers' client): measured against the LLM emulator at 32 concurrent calls, httpx
spent 1.7 ms of CPU per call (its pool checks every idle connection's socket on each
request), aiohttp 0.12 ms."""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack, aclosing, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from avatar_chat.errors import LlmError, LlmTimeout, LlmUnavailable, ModelNotFound
from avatar_chat.llm.wire import (
    context_refused,
    failed,
    json_object,
    malformed,
    upstream_message,
)
from avatar_chat.settings import ChatSettings
from avatar_shared.metrics import upstream_call


@dataclass(frozen=True)
class Sampling:
    """The optional generation controls of a request. None (and no stop sequences) means the
    server's own default: the field is not sent. Each provider maps them to its own names."""

    top_p: float | None = None
    top_k: int | None = None  # 0: off
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()  # the server stops before any of them and leaves it out


@dataclass(frozen=True)
class LlmRequest:
    model: str
    messages: list[dict[str, str]]  # the system message first
    temperature: float
    max_tokens: int
    context_tokens: int  # the window planned for: sent to Ollama as num_ctx
    sampling: Sampling = Sampling()  # summaries: the server's defaults
    # The last message is the character's, to be continued rather than answered.
    continues: bool = False
    # The reply must be JSON matching this JSON Schema (the servers' structured outputs:
    # Ollama's `format`, OpenAI's `response_format`); None: text.
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class LlmReply:
    content: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class StreamPiece:
    """What one line of a streamed answer says."""

    text: str = ""
    counts: tuple[int, int] | None = None  # (prompt, completion) tokens, where it reports them
    done: bool = False  # the server's end of the answer


class LlmClient(ABC):
    unfinished = "The language model server ended the stream before it was done."

    def __init__(self, http: aiohttp.ClientSession, settings: ChatSettings) -> None:
        self.http = http
        self.settings = settings

    @property
    @abstractmethod
    def chat_url(self) -> str: ...

    @abstractmethod
    def payload(self, request: LlmRequest, stream: bool) -> dict[str, Any]: ...

    @abstractmethod
    def parse_reply(self, body: dict[str, Any]) -> LlmReply:
        """The whole reply of a non-streamed answer."""

    @abstractmethod
    def parse_line(self, line: bytes) -> StreamPiece:
        """One line of a streamed answer (an error the server reports in it raises)."""

    async def complete(self, request: LlmRequest) -> LlmReply:
        payload = self.payload(request, stream=False)
        return self.parse_reply(await self._post_json(self.chat_url, payload, request.model))

    async def stream(self, request: LlmRequest) -> AsyncGenerator[str | LlmReply, None]:
        """Text deltas as the model produces them, then one LlmReply with the whole reply.
        The lines that arrived together give one delta (a busy replica catches up in one
        event rather than many; a line is never held back for a later one). Closing the
        stream closes the upstream request."""
        parts: list[str] = []
        counts = (0, 0)  # a server that reports none: counts of 0
        batches = self._stream_lines(self.chat_url, self.payload(request, True), request.model)
        async with aclosing(batches):
            async for lines in batches:
                pieces, failure = self._parsed(lines)
                if text := "".join(piece.text for piece in pieces):
                    parts.append(text)
                    yield text
                if failure:  # after the text that came before it
                    raise failure
                for piece in pieces:
                    counts = piece.counts or counts
                    if piece.done:
                        yield LlmReply("".join(parts), *counts)
                        return
        raise LlmError(self.unfinished)

    def _parsed(self, lines: list[bytes]) -> tuple[list[StreamPiece], LlmError | None]:
        """The pieces `lines` say up to the server's end of the answer (whatever follows it
        is not the answer's), or up to the first line that fails, and its failure."""
        pieces = []
        for line in lines:
            try:
                pieces.append(self.parse_line(line))
            except LlmError as exc:
                return pieces, exc
            if pieces[-1].done:
                break
        return pieces, None

    @abstractmethod
    async def model_names(self) -> list[str]: ...

    @abstractmethod
    async def trained_context(self, model: str) -> int | None:
        """The model's context length as the server reports it, or None when it does not."""

    async def _post_json(self, url: str, payload: dict[str, Any], model: str) -> dict[str, Any]:
        """One whole request/response exchange, bounded by the total timeout."""
        with upstream_call("llm"):
            return await self._exchange("POST", url, payload, model)

    async def _get_json(self, url: str) -> dict[str, Any]:
        return await self._exchange("GET", url, None, None)

    async def _exchange(
        self, method: str, url: str, payload: dict[str, Any] | None, model: str | None
    ) -> dict[str, Any]:
        with llm_failures():
            async with (
                asyncio.timeout(self.settings.llm_total_timeout_s),
                self.http.request(method, url, json=payload, headers=self._headers()) as response,
            ):
                body = await response.read()
        check_status(response.status, body, model)
        return json_object(body, "response")

    async def _model_entries(self, url: str, key: str) -> list[dict[str, Any]]:
        """The model objects the server lists under `key` (no list there: a 502)."""
        models = (await self._get_json(url)).get(key)
        if not isinstance(models, list):
            raise malformed("model list")
        return [model for model in models if isinstance(model, dict)]

    async def _stream_lines(
        self, url: str, payload: dict[str, Any], model: str
    ) -> AsyncGenerator[list[bytes], None]:
        """The response body's non-blank lines, as many at a time as have arrived, each at
        most LLM_MAX_LINE_BYTES (a longer one is a 502: no line grows without bound in
        memory). The whole stream is bounded by the total timeout: the request and each wait
        for bytes end with it (an asyncio.timeout cannot span the yields of a generator, so
        each wait has its own). Closing the generator closes the upstream request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.llm_total_timeout_s
        read_timeout_s = self.settings.llm_read_timeout_s
        lines = _Lines(self.settings.llm_max_line_bytes)
        with upstream_call("llm"), llm_failures():
            async with AsyncExitStack() as request:
                async with asyncio.timeout_at(deadline):
                    post = self.http.post(url, json=payload, headers=self._headers())
                    response = await request.enter_async_context(post)
                    if response.status >= 400:
                        check_status(response.status, await response.read(), model)
                while True:
                    left_s = deadline - loop.time()
                    if left_s <= 0:
                        raise LlmTimeout()
                    # The read timeout bounds the waits the total time outlasts: a timer is
                    # armed only for the last ones (not on every read of the hottest call).
                    if left_s < read_timeout_s:
                        async with asyncio.timeout(left_s):
                            data = await response.content.readany()
                    else:
                        data = await response.content.readany()
                    if not data:  # the end
                        break
                    if complete := lines.feed(data):
                        yield complete
                if last := lines.end():
                    yield last

    def _headers(self) -> dict[str, str]:
        return {}


class _Lines:
    """Splits a stream into its lines (at b"\\n"), however its reads cut them; a line longer
    than `limit` bytes is a 502."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.partial = b""  # the start of a line whose end has not arrived

    def feed(self, data: bytes) -> list[bytes]:
        """The non-blank lines `data` completes."""
        *complete, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > self.limit or any(len(line) > self.limit for line in complete):
            raise LlmError(
                f"The language model server sent a stream line longer than {self.limit} bytes."
            )
        return [line for line in complete if line.strip()]

    def end(self) -> list[bytes]:
        """The last line, when the stream did not end with a line break."""
        last, self.partial = self.partial, b""
        return [last] if last.strip() else []


OUTSIDE_THE_GATE = 8


def open_llm_http(settings: ChatSettings) -> aiohttp.ClientSession:
    """One pooled session per process for every LLM call. The read timeout bounds each wait
    for bytes; the total one is the callers' (`asyncio.timeout`, or one per wait of a
    stream)."""
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.llm_connect_timeout_s,  # a free connection, or a new one
        sock_read=settings.llm_read_timeout_s,
    )
    # Room for every call the gate lets through (LLM_MAX_IN_FLIGHT) and a few outside it
    # (model lists, health): aiohttp's own default of 100 made calls past it wait for a
    # connection until they timed out.
    connector = aiohttp.TCPConnector(limit=settings.llm_max_in_flight + OUTSIDE_THE_GATE)
    return aiohttp.ClientSession(timeout=timeout, trust_env=False, connector=connector)


@contextmanager
def llm_failures() -> Iterator[None]:
    """Unreachable -> 503, too slow -> 504, broken off mid-answer -> 502."""
    try:
        yield
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        raise LlmTimeout() from exc
    except aiohttp.ClientConnectorError as exc:
        raise LlmUnavailable() from exc
    except aiohttp.ClientError as exc:  # it answered, then broke off
        raise LlmError("The language model server broke off its answer.") from exc


def check_status(status: int, body: bytes, model: str | None) -> None:
    """Raise for an error status (what the body says goes to the log)."""
    if status < 400:
        return
    if status == 404 and model:
        raise ModelNotFound(model)
    if status == 400 and (refused := context_refused(body)):
        raise refused
    raise failed(upstream_message(body), status)
