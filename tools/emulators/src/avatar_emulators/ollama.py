"""Ollama server emulator: for tests and `make demo` only, never for production.

Follows the public Ollama REST API documentation (ollama/ollama docs/api.md):
``POST /api/chat`` (``stream`` defaults to true: NDJSON chunks, then a final ``done: true`` line
with the timing/count statistics; ``stream: false``: one JSON object), ``GET /api/tags``,
``GET /api/version``, ``POST /api/show`` and ``GET /`` ("Ollama is running"). Errors are
``{"error": "..."}``. Like Ollama, model names without a tag are listed as ``<name>:latest`` and
both spellings are accepted.

Token rule (shared with the OpenAI emulator, see ``avatar_emulators.replies``): ``count_tokens``
counts whitespace-separated words; a prompt costs ``count_tokens(content) + 4`` per message; the
reply streams one word per chunk, so ``eval_count`` is the number of content chunks. Like Ollama,
when the prompt exceeds ``options.num_ctx`` (default ``OllamaConfig.default_num_ctx``) the oldest
non-system messages are silently dropped (system messages and the last message are kept);
``options.num_predict`` caps the reply (``done_reason: "length"``). ``options.stop`` (an array of
strings) ends the reply before the first stop sequence it holds, and the stop text is not sent,
as Ollama's runner does; the other sampling options (``SAMPLING_OPTIONS``) are type-checked and
recorded (``PromptRecord.sampling``), and do not change the reply.

Structured outputs: ``format`` is ``"json"`` (any JSON object) or a JSON schema, and the reply's
``message.content`` is JSON text that follows it, scripted by the prompt (the convention is in
``avatar_emulators.replies``); ``null`` and ``""`` mean no format. As Ollama's runner
(llm/server.go, ``Completion``) and ``streamResponse`` (server/routes.go) answer, any other value
is a 500 ``{"error": "invalid format: <the value, quoted>; expected \"json\" or a valid JSON
Schema object"}`` and a schema it cannot follow a 500 ``{"error": "invalid JSON schema in
format"}``, streamed or not (the error comes before any token).

Test hooks: ``app.state.recorder`` (a ``PromptRecorder``) and ``GET``/``DELETE /_emulator/prompts``.
Failure injection: the model ``emulator-error-midstream`` streams a few chunks, then the line
``{"error": ...}`` with status 200 (as Ollama does for errors after streaming began; a 500 when not
streaming); ``OllamaConfig.fail_status`` makes every chat request fail with that status.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

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
    fit_to_context,
    limit_tokens,
    make_reply,
    split_reply,
    validate_messages,
    wait_before_token,
    wait_for_whole_reply,
)
from avatar_emulators.structured import JsonOutput, SchemaError, check_schema

__all__ = ["OllamaConfig", "PromptRecord", "PromptRecorder", "count_tokens", "create_app"]

# The sampling options recorded, under Ollama's names (docs/api.md, "Generate request (With
# options)"), and the type each must have.
INT_SAMPLING_OPTIONS = ("top_k", "seed")
FLOAT_SAMPLING_OPTIONS = (
    "top_p",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
SAMPLING_OPTIONS = (*INT_SAMPLING_OPTIONS, *FLOAT_SAMPLING_OPTIONS, "stop")

# Ollama reports a model load time; the emulator has nothing to load, so it reports a constant.
LOAD_DURATION_NS = 1_000_000


@dataclass
class OllamaConfig(ChatEmulatorConfig):
    """Settings of the Ollama emulator (models, speed, failure injection, recorder)."""

    default_num_ctx: int = 4096  # what Ollama uses when options.num_ctx is absent
    context_length: int = 131072  # the trained length /api/show reports (as gemma3 does)
    version: str = "0.9.0"


class OllamaError(Exception):
    """An error answered in Ollama's shape: ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ChatRequest:
    """The parts of an /api/chat body the emulator acts on."""

    model: str
    messages: list[Message]
    stream: bool
    options: dict[str, Any]
    num_ctx: int
    num_predict: int | None
    temperature: float | None
    stop: list[str]
    sampling: dict[str, Any]  # the sampling options received (SAMPLING_OPTIONS)
    format: Any  # the `format` field as received (checked when answering, as Ollama does)


def _canonical(name: str) -> str:
    # Ollama names are model:tag and an omitted tag means "latest".
    return name if ":" in name else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _int_option(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OllamaError(400, f"option {name} must be an integer")
    return value


def _float_option(options: dict[str, Any], name: str) -> float | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OllamaError(400, f"option {name} must be a number")
    return float(value)


def _stop_option(options: dict[str, Any]) -> list[str]:
    value = options.get("stop")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise OllamaError(400, "option stop must be an array of strings")
    return [s for s in value if s]


def _sampling_options(options: dict[str, Any]) -> dict[str, Any]:
    for name in INT_SAMPLING_OPTIONS:
        _int_option(options, name)
    for name in FLOAT_SAMPLING_OPTIONS:
        _float_option(options, name)
    return {name: options[name] for name in SAMPLING_OPTIONS if name in options}


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise OllamaError(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise OllamaError(400, "request body must be a JSON object")
    return body


def _parse_chat_request(body: dict[str, Any], default_num_ctx: int) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OllamaError(400, "model is required")
    try:
        messages = validate_messages(body.get("messages", []))
    except ValueError as exc:
        raise OllamaError(400, str(exc)) from exc
    stream = body.get("stream")
    if stream is None:
        stream = True  # Ollama streams unless told otherwise
    if not isinstance(stream, bool):
        raise OllamaError(400, "stream must be a boolean")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise OllamaError(400, "options must be an object")
    num_ctx = _int_option(options, "num_ctx") or default_num_ctx
    if num_ctx <= 0:
        raise OllamaError(400, "option num_ctx must be positive")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        options=options,
        num_ctx=num_ctx,
        num_predict=_int_option(options, "num_predict"),
        temperature=_float_option(options, "temperature"),
        stop=_stop_option(options),
        sampling=_sampling_options(options),
        format=body.get("format"),
    )


def _output_format(value: Any) -> JsonOutput | None:
    """`format` read as Ollama's runner reads it (llm/server.go): null and "" mean none, "json"
    any JSON, an object a JSON schema; anything else is refused with a 500."""
    if value is None or value == "":
        return None
    if value == "json":
        return JsonOutput()
    if not isinstance(value, dict):
        # Go's %q of the raw JSON value as sent (here re-serialised compactly).
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        quoted = json.dumps(raw, ensure_ascii=False)
        raise OllamaError(
            500, f'invalid format: {quoted}; expected "json" or a valid JSON Schema object'
        )
    try:
        check_schema(value)
    except SchemaError as exc:
        raise OllamaError(500, "invalid JSON schema in format") from exc
    return JsonOutput(value)


def _chunk(model: str, content: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": content},
        "done": False,
    }


def _final(
    model: str, content: str, done_reason: str, prompt_tokens: int, eval_count: int, started: int
) -> dict[str, Any]:
    """The closing object: same shape for the last stream line and the non-streaming answer."""
    # Split the elapsed time like Ollama does: prompt evaluation first, then token generation.
    elapsed = max(time.perf_counter_ns() - started, 2)
    return {
        **_chunk(model, content),
        "done": True,
        "done_reason": done_reason,
        "total_duration": elapsed + LOAD_DURATION_NS,
        "load_duration": LOAD_DURATION_NS,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": elapsed // 2,
        "eval_count": eval_count,
        "eval_duration": elapsed - elapsed // 2,
    }


def _ndjson(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def _model_details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "emulator",
        "families": ["emulator"],
        "parameter_size": "0B",
        "quantization_level": "none",
    }


def _model_entry(name: str, modified_at: str) -> dict[str, Any]:
    canonical = _canonical(name)
    return {
        "name": canonical,
        "model": canonical,
        "modified_at": modified_at,
        "size": 1_000_000 * len(canonical),
        "digest": hashlib.sha256(canonical.encode()).hexdigest(),
        "details": _model_details(),
    }


def create_app(config: OllamaConfig | None = None) -> FastAPI:
    """Build the Ollama emulator app; `app.state.recorder` holds the prompts it received."""
    config = config or OllamaConfig()
    app = FastAPI(title="Ollama emulator")
    app.state.config = config
    app.state.recorder = config.recorder
    started_at = _now()

    def require_model(name: str) -> None:
        special = (ERROR_MIDSTREAM_MODEL, LONG_REPLY_MODEL)
        known = {_canonical(m) for m in [*config.models, *special]}
        if _canonical(name) not in known:
            raise OllamaError(404, f"model '{name}' not found")

    @app.exception_handler(OllamaError)
    async def ollama_error(_request: Request, exc: OllamaError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/")
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Ollama is running")

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": config.version}

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [_model_entry(m, started_at) for m in config.models]}

    @app.post("/api/show")
    async def show(request: Request) -> dict[str, Any]:
        body = await _json_object(request)
        name = body.get("model") or body.get("name")  # "name" is the older spelling
        if not isinstance(name, str) or not name:
            raise OllamaError(400, "model is required")
        require_model(name)
        return {
            "modelfile": f"# Avatar Forge emulator\nFROM {_canonical(name)}\n",
            "parameters": f"num_ctx {config.default_num_ctx}",
            "template": "{{ .Prompt }}",
            "details": _model_details(),
            "model_info": {
                "general.architecture": "emulator",
                "emulator.context_length": config.context_length,
            },
            "capabilities": ["completion"],
            "modified_at": started_at,
        }

    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        started = time.perf_counter_ns()
        req = _parse_chat_request(await _json_object(request), config.default_num_ctx)
        require_model(req.model)
        used, prompt_tokens = _fit_and_record(req, config.recorder)
        if config.fail_status is not None:
            raise OllamaError(config.fail_status, "emulator: injected failure (fail_status)")
        if not req.messages:
            return _load_response(req, started)
        return await _answer(config, req, used, prompt_tokens, started, config.recorder.prompts[-1])

    @app.get("/_emulator/prompts")
    async def list_prompts() -> list[dict[str, Any]]:
        return [p.to_dict() for p in config.recorder.prompts]

    @app.delete("/_emulator/prompts")
    async def clear_prompts() -> Response:
        config.recorder.clear()
        return Response(status_code=204)

    return app


def _fit_and_record(req: ChatRequest, recorder: PromptRecorder) -> tuple[list[Message], int]:
    """Apply the num_ctx truncation and record what was received and what will be used."""
    used, dropped = fit_to_context(req.messages, req.num_ctx)
    prompt_tokens = count_prompt_tokens(used)
    recorder.record(
        PromptRecord(
            model=req.model,
            messages_received=req.messages,
            messages_used=used,
            dropped=dropped,
            prompt_tokens=prompt_tokens,
            options=req.options,
            stream=req.stream,
            sampling=req.sampling,
            format=req.format,
        )
    )
    return used, prompt_tokens


def _load_response(req: ChatRequest, started: int) -> Response:
    # Ollama answers an empty conversation by just loading the model.
    loaded = _final(req.model, "", "load", 0, 0, started)
    if req.stream:
        return Response(_ndjson(loaded), media_type="application/x-ndjson")
    return JSONResponse(loaded)


async def _answer(
    config: OllamaConfig,
    req: ChatRequest,
    used: list[Message],
    prompt_tokens: int,
    started: int,
    record: PromptRecord,
) -> Response:
    """Generate the reply and send it as an NDJSON stream or as one JSON object."""
    output = _output_format(req.format)  # refused before any token, as Ollama does
    try:
        reply = make_reply(used, req.model, req.temperature, config.reply_words, output)
    except SchemaError as exc:
        raise OllamaError(500, "invalid JSON schema in format") from exc
    reply, _ = cut_at_stop(reply, req.stop)
    tokens, cut = limit_tokens(split_reply(reply), req.num_predict)
    done_reason = "length" if cut else "stop"
    if req.stream:
        stream = _stream_chat(
            config, req.model, tokens, done_reason, prompt_tokens, started, record
        )
        return StreamingResponse(stream, media_type="application/x-ndjson")
    if req.model == ERROR_MIDSTREAM_MODEL:
        raise OllamaError(500, ERROR_MIDSTREAM_MESSAGE)
    await wait_for_whole_reply(len(tokens), config.first_token_latency_s, config.tokens_per_second)
    content = "".join(tokens)
    return JSONResponse(
        _final(req.model, content, done_reason, prompt_tokens, len(tokens), started)
    )


async def _stream_chat(
    config: OllamaConfig,
    model: str,
    tokens: list[str],
    done_reason: str,
    prompt_tokens: int,
    started: int,
    record: PromptRecord,
) -> AsyncIterator[bytes]:
    """NDJSON lines: one chunk per token, then the statistics line (or an in-band error)."""
    for index, token in enumerate(tokens):
        await wait_before_token(index, config.first_token_latency_s, config.tokens_per_second)
        if model == ERROR_MIDSTREAM_MODEL and index == ERROR_MIDSTREAM_AFTER_TOKENS:
            # Headers (200) are already sent, so Ollama can only report the error in-band.
            yield _ndjson({"error": ERROR_MIDSTREAM_MESSAGE})
            return
        yield _ndjson(_chunk(model, token))
        record.tokens_sent += 1
    yield _ndjson(_final(model, "", done_reason, prompt_tokens, len(tokens), started))
