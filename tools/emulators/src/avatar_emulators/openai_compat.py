"""OpenAI-compatible (vLLM-like) server emulator: for tests and `make demo` only, never production.

Follows the public OpenAI Chat Completions API reference and vLLM's OpenAI-compatible server docs:
``POST /v1/chat/completions`` answers a ``chat.completion`` object with ``usage``; with
``stream: true`` it sends Server-Sent Events ``data: {chat.completion.chunk}``: first a chunk with
the assistant role, then one content delta per token, then a chunk with ``finish_reason``, then a
usage chunk (``choices: []``) only when ``stream_options.include_usage`` is true, then
``data: [DONE]``. ``GET /v1/models`` lists the models, ``GET /health`` is 200 with an empty body.
Errors are ``{"error": {"message", "type", "param", "code"}}`` with vLLM's type names
("NotFoundError", "BadRequestError", ...). With ``api_key`` set, ``/v1`` routes require
``Authorization: Bearer <key>`` (401 otherwise); with ``path_prefix`` (e.g. "/vllm") every route is
also served under that prefix.

Token rule (shared with the Ollama emulator, see ``avatar_emulators.replies``): ``count_tokens``
counts whitespace-separated words; a prompt costs ``count_tokens(content) + 4`` per message; one
content delta is one token, so ``completion_tokens`` is the number of content deltas. Like vLLM,
a prompt plus ``max_tokens`` longer than ``max_model_len`` is rejected with 400 (no truncation).
``stop`` (a string or an array of strings) ends the reply before the first stop sequence it
holds (``finish_reason: "stop"``, ``stop_reason``: the sequence), and the stop text is not sent,
as vLLM does by default (``include_stop_str_in_output: false``); the other sampling fields
(``SAMPLING_FIELDS``: OpenAI's and vLLM's extra ``top_k``, ``min_p``, ``repetition_penalty``) are
checked as vLLM checks them and recorded (``PromptRecord.sampling``), and do not change the reply.

Structured outputs: ``response_format`` ``{"type": "json_object"}`` (any JSON object) or
``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` makes the reply's
content JSON text that follows it, scripted by the prompt (the convention is in
``avatar_emulators.replies``); ``{"type": "text"}`` is the ordinary reply, and a ``json_schema``
without ``schema`` (optional in OpenAI's reference) is answered like ``json_object``. A
malformed ``response_format`` is a 400 ``BadRequestError`` with ``param: "response_format"``,
as vLLM's request validation answers (``ChatCompletionRequest.validate_response_format``: "When
response_format type is 'json_schema', the 'json_schema' field must be provided."); a schema
the emulator cannot follow is a 400 too (vLLM refuses one its grammar backend cannot compile).

Test hooks: ``app.state.recorder`` (a ``PromptRecorder``) and ``GET``/``DELETE /_emulator/prompts``.
Failure injection: the model ``emulator-error-midstream`` streams a few deltas, then
``data: {"error": {...}}`` and ``data: [DONE]`` (a 500 when not streaming);
``OpenAICompatConfig.fail_status`` makes every completion request fail with that status.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from avatar_emulators.replies import (
    ERROR_MIDSTREAM_AFTER_TOKENS,
    ERROR_MIDSTREAM_MESSAGE,
    ERROR_MIDSTREAM_MODEL,
    LONG_REPLY_MODEL,
    ChatEmulatorConfig,
    Message,
    PromptRecord,
    PromptRecorder,
    count_prompt_tokens,
    count_tokens,
    cut_at_stop,
    limit_tokens,
    make_reply,
    parse_stop,
    split_reply,
    validate_messages,
    wait_before_token,
    wait_for_whole_reply,
)
from avatar_emulators.structured import JsonOutput, SchemaError, check_schema

__all__ = [
    "OpenAICompatConfig",
    "PromptRecord",
    "PromptRecorder",
    "count_tokens",
    "create_app",
]

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


# The sampling fields recorded, and the values vLLM's SamplingParams refuses (a 400), with
# its words.
_FLOAT_FIELDS = ("top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
_INT_FIELDS = ("top_k", "seed")
SAMPLING_FIELDS = (*_FLOAT_FIELDS, *_INT_FIELDS, "stop")
_VLLM_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "min_p": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "repetition_penalty": (lambda v: v > 0, "must be greater than zero"),
    "presence_penalty": (lambda v: -2 <= v <= 2, "must be in [-2, 2]"),
    "frequency_penalty": (lambda v: -2 <= v <= 2, "must be in [-2, 2]"),
    "top_k": (lambda v: v >= -1, "must be 0 (disable), or at least 1"),
}


@dataclass
class OpenAICompatConfig(ChatEmulatorConfig):
    """Settings of the OpenAI-compatible emulator."""

    api_key: str | None = None  # when set, /v1 routes need "Authorization: Bearer <api_key>"
    path_prefix: str = ""  # e.g. "/vllm": routes are served at the root and under the prefix
    max_model_len: int = 8192  # like vLLM's --max-model-len
    owned_by: str = "vllm"


class OpenAIError(Exception):
    """An error answered in the OpenAI/vLLM shape."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param  # the request field at fault, where vLLM names one

    def body(self) -> dict[str, Any]:
        error_type = _ERROR_TYPES.get(self.status, "InternalServerError")
        return {
            "error": {
                "message": self.message,
                "type": error_type,
                "param": self.param,
                "code": self.status,
            }
        }


@dataclass
class CompletionRequest:
    """The parts of a chat completion body the emulator acts on."""

    model: str
    messages: list[Message]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None
    options: dict[str, Any]
    stop: list[str]
    sampling: dict[str, Any]  # the sampling fields received (SAMPLING_FIELDS)
    output: JsonOutput | None = None  # what response_format asks for (None: plain text)


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields received, refused (400) where vLLM refuses them."""
    for name in (*_FLOAT_FIELDS, *_INT_FIELDS):
        value = body.get(name)
        if value is None:
            continue
        number = name in _FLOAT_FIELDS
        if isinstance(value, bool) or not isinstance(value, int | float if number else int):
            kind = "a number" if number else "an integer"
            raise OpenAIError(400, f"{name} must be {kind}, got {value!r}.")
        accepts, words = _VLLM_RANGES.get(name, (lambda _: True, ""))
        if not accepts(value):
            raise OpenAIError(400, f"{name} {words}, got {value}.")
    return {name: body[name] for name in SAMPLING_FIELDS if name in body}


def _optional_positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OpenAIError(400, f"{name} must be an integer of at least 1, got {value!r}.")
    return value


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        # vLLM rejects stream_options on non-streaming requests.
        raise OpenAIError(400, "Stream options can only be defined when `stream=True`.")
    if not isinstance(options, dict):
        raise OpenAIError(400, "stream_options must be an object")
    return bool(options.get("include_usage", False))


def _check_continuation(body: dict[str, Any], messages: list[Message]) -> None:
    """vLLM's chat-template extensions (vllm/entrypoints/openai/protocol.py): continuing the
    final message excludes a generation prompt (which defaults to true), and what is
    continued must be the assistant's."""
    if body.get("continue_final_message") is True:
        if body.get("add_generation_prompt", True) is not False:
            raise OpenAIError(
                400,
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
            )
        if messages[-1].get("role") != "assistant":
            raise OpenAIError(400, "continue_final_message needs a final assistant message")


def _parse_request(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "model is required")
    try:
        messages = validate_messages(body.get("messages"))
    except ValueError as exc:
        raise OpenAIError(400, str(exc)) from exc
    if not messages:
        raise OpenAIError(400, "messages must contain at least one message")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "stream must be a boolean")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise OpenAIError(400, "temperature must be a number")
    _check_continuation(body, messages)
    # max_completion_tokens is the newer spelling of max_tokens and wins when both are given.
    max_tokens = _optional_positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_positive_int(body, "max_tokens")
    return CompletionRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=_include_usage(body, stream),
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        options={k: v for k, v in body.items() if k not in ("model", "messages", "stream")},
        stop=_stop(body),
        sampling=_sampling(body),
        output=_response_format(body.get("response_format")),
    )


def _bad_format(message: str) -> OpenAIError:
    return OpenAIError(400, message, param="response_format")


def _response_format(value: Any) -> JsonOutput | None:
    """`response_format` checked as vLLM's ResponseFormat model and validator check it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad_format("response_format must be an object")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonOutput()
    if kind != "json_schema":
        raise _bad_format(
            f"response_format.type: Input should be 'text', 'json_object' or 'json_schema', "
            f"got {kind!r}."
        )
    spec = value.get("json_schema")
    if spec is None:
        raise _bad_format(
            "When response_format type is 'json_schema', the 'json_schema' field must be provided."
        )
    return _json_schema_format(spec)


def _json_schema_format(spec: Any) -> JsonOutput:
    """The `json_schema` object: a name (required), an optional schema and strict flag."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise _bad_format("response_format.json_schema.name: Field required (a string).")
    if not isinstance(spec.get("strict", False), bool | None):
        raise _bad_format("response_format.json_schema.strict must be a boolean.")
    schema = spec.get("schema")
    if schema is None:
        return JsonOutput()  # the schema is optional in OpenAI's reference
    try:
        check_schema(schema)
    except SchemaError as exc:
        raise _bad_format(f"Invalid JSON schema in response_format: {exc}.") from exc
    return JsonOutput(schema)


def _stop(body: dict[str, Any]) -> list[str]:
    try:
        return parse_stop(body.get("stop"))
    except ValueError as exc:
        raise OpenAIError(400, str(exc)) from exc


def _check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    requested = prompt_tokens + (max_tokens or 0)
    if requested > max_model_len:
        raise OpenAIError(
            400,
            # vLLM's current wording (renderers/params.py); older ones: llm/wire.py.
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {max_tokens or 0} output tokens and your prompt contains "
            f"{prompt_tokens} input tokens, for a total of {requested} tokens. Please reduce "
            "the length of the input prompt or the number of requested output tokens.",
        )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class _Completion:
    """Everything needed to answer one request, streamed or not."""

    id: str
    created: int
    model: str
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    include_usage: bool
    stop_reason: str | None = None  # the stop sequence that ended the reply, as vLLM reports

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        stop_reason = self.stop_reason if finish_reason else None
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": stop_reason,
                }
            ],
        }
        if self.include_usage:
            chunk["usage"] = None  # OpenAI: every chunk but the last carries a null usage
        return chunk

    def usage_chunk(self) -> dict[str, Any]:
        return {
            **self.chunk({}),
            "choices": [],
            "usage": _usage(self.prompt_tokens, len(self.tokens)),
        }

    def whole(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": "".join(self.tokens)}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                    "stop_reason": self.stop_reason,
                }
            ],
            "usage": _usage(self.prompt_tokens, len(self.tokens)),
        }


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def _stream(
    config: OpenAICompatConfig, completion: _Completion, record: PromptRecord
) -> AsyncIterator[bytes]:
    """SSE events: role chunk, content deltas, finish chunk, optional usage chunk, [DONE]."""
    yield _sse(completion.chunk({"role": "assistant", "content": ""}))
    for index, token in enumerate(completion.tokens):
        await wait_before_token(index, config.first_token_latency_s, config.tokens_per_second)
        if completion.model == ERROR_MIDSTREAM_MODEL and index == ERROR_MIDSTREAM_AFTER_TOKENS:
            # The 200 status is already sent; vLLM reports late errors as an event, then [DONE].
            yield _sse(OpenAIError(500, ERROR_MIDSTREAM_MESSAGE).body())
            yield _sse("[DONE]")
            return
        yield _sse(completion.chunk({"content": token}))
        record.tokens_sent += 1
    yield _sse(completion.chunk({}, completion.finish_reason))
    if completion.include_usage:
        yield _sse(completion.usage_chunk())
    yield _sse("[DONE]")


def _normalise_prefix(prefix: str) -> str:
    stripped = prefix.strip("/")
    return f"/{stripped}" if stripped else ""


def create_app(config: OpenAICompatConfig | None = None) -> FastAPI:
    """Build the OpenAI-compatible emulator; `app.state.recorder` holds the prompts it received."""
    config = config or OpenAICompatConfig()
    app = FastAPI(title="OpenAI-compatible (vLLM) emulator")
    app.state.config = config
    app.state.recorder = config.recorder
    router = _build_router(config)
    app.include_router(router)
    prefix = _normalise_prefix(config.path_prefix)
    if prefix:
        app.include_router(router, prefix=prefix)

    @app.exception_handler(OpenAIError)
    async def openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    return app


def _build_router(config: OpenAICompatConfig) -> APIRouter:
    router = APIRouter()
    started = int(time.time())

    async def check_api_key(request: Request) -> None:
        if config.api_key is None:
            return
        if request.headers.get("authorization") != f"Bearer {config.api_key}":
            raise OpenAIError(401, "Unauthorized: missing or invalid API key")

    def require_model(name: str) -> None:
        if name not in config.models and name not in (ERROR_MIDSTREAM_MODEL, LONG_REPLY_MODEL):
            raise OpenAIError(404, f"The model `{name}` does not exist.")

    @router.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @router.get("/v1/models", dependencies=[Depends(check_api_key)])
    async def models() -> dict[str, Any]:
        data = [
            {
                "id": m,
                "object": "model",
                "created": started,
                "owned_by": config.owned_by,
                "root": m,
                "parent": None,
                "max_model_len": config.max_model_len,  # vLLM lists it; OpenAI does not
            }
            for m in config.models
        ]
        return {"object": "list", "data": data}

    @router.post("/v1/chat/completions", dependencies=[Depends(check_api_key)])
    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise OpenAIError(400, f"invalid JSON body: {exc}") from exc
        req = _parse_request(body)
        require_model(req.model)
        prompt_tokens = count_prompt_tokens(req.messages)
        _check_context(prompt_tokens, req.max_tokens, config.max_model_len)
        config.recorder.record(_prompt_record(req, prompt_tokens))
        if config.fail_status is not None:
            raise OpenAIError(config.fail_status, "emulator: injected failure (fail_status)")
        completion = _new_completion(req, prompt_tokens, config.reply_words)
        if req.stream:
            stream = _stream(config, completion, config.recorder.prompts[-1])
            return StreamingResponse(stream, media_type="text/event-stream")
        if req.model == ERROR_MIDSTREAM_MODEL:
            raise OpenAIError(500, ERROR_MIDSTREAM_MESSAGE)
        await wait_for_whole_reply(
            len(completion.tokens), config.first_token_latency_s, config.tokens_per_second
        )
        return JSONResponse(completion.whole())

    @router.get("/_emulator/prompts")
    async def list_prompts() -> list[dict[str, Any]]:
        return [p.to_dict() for p in config.recorder.prompts]

    @router.delete("/_emulator/prompts")
    async def clear_prompts() -> Response:
        config.recorder.clear()
        return Response(status_code=204)

    return router


def _prompt_record(req: CompletionRequest, prompt_tokens: int) -> PromptRecord:
    # vLLM never truncates the conversation, so what was received is what was used.
    return PromptRecord(
        model=req.model,
        messages_received=req.messages,
        messages_used=req.messages,
        dropped=0,
        prompt_tokens=prompt_tokens,
        options=req.options,
        stream=req.stream,
        sampling=req.sampling,
        format=req.options.get("response_format"),
    )


def _new_completion(req: CompletionRequest, prompt_tokens: int, words: int) -> _Completion:
    try:
        reply = make_reply(req.messages, req.model, req.temperature, words, req.output)
    except SchemaError as exc:
        raise _bad_format(f"Invalid JSON schema in response_format: {exc}.") from exc
    reply, stopped_by = cut_at_stop(reply, req.stop)
    tokens, cut = limit_tokens(split_reply(reply), req.max_tokens)
    return _Completion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=req.model,
        tokens=tokens,
        finish_reason="length" if cut else "stop",
        prompt_tokens=prompt_tokens,
        include_usage=req.include_usage,
        stop_reason=None if cut else stopped_by,
    )
