"""Behaviour of the OpenAI-compatible (vLLM) emulator as an HTTP client sees it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from avatar_emulators.openai_compat import OpenAICompatConfig, create_app
from avatar_emulators.replies import count_prompt_tokens, count_tokens
from avatar_emulators.server import serve_in_thread

MODEL = "dolphin-2.9-8b"
KEY = "sk-emulator"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [
    {"role": "system", "content": "You are Sir Reginald, a pompous butler."},
    {"role": "user", "content": "Where is the silver teapot?"},
]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    config = OpenAICompatConfig(api_key=KEY, path_prefix="/vllm", max_model_len=200)
    with serve_in_thread(create_app(config)) as base_url:
        yield base_url


async def sse_events(url: str, body: dict[str, Any], path: str = "/v1") -> list[Any]:
    """POST a streaming request; returns decoded `data:` payloads ("[DONE]" kept as a string)."""
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        async with client.stream("POST", f"{path}/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            payloads = [
                line.removeprefix("data: ")
                async for line in response.aiter_lines()
                if line.startswith("data: ")
            ]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


async def test_stream_without_usage(url: str) -> None:
    events = await sse_events(url, {"model": MODEL, "messages": MESSAGES, "stream": True})

    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c or c["usage"] is None for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "emulator" in text and "silver teapot?" in text and "Sir Reginald" in text


async def test_stream_with_usage_under_prefix(url: str) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 7,
        "stream_options": {"include_usage": True},
    }
    events = await sse_events(url, body, path="/vllm/v1")

    assert events[-1] == "[DONE]"
    usage_chunk, finish_chunk = events[-2], events[-3]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": count_prompt_tokens(MESSAGES),
        "completion_tokens": 7,
        "total_tokens": count_prompt_tokens(MESSAGES) + 7,
    }
    assert finish_chunk["choices"][0]["finish_reason"] == "length"
    content_chunks = [e for e in events[1:-3]]
    assert len(content_chunks) == 7


async def test_non_streaming_completion(url: str) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "temperature": 0.9}
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        response = await client.post("/v1/chat/completions", json=body)

    data = response.json()
    assert response.status_code == 200
    assert data["object"] == "chat.completion"
    content = data["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "stop"
    assert "0.9" in content
    assert data["usage"]["completion_tokens"] == count_tokens(content)
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + count_tokens(content)


async def test_auth_models_and_health(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        no_key = await client.get("/v1/models")
        wrong_key = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        models = await client.get("/vllm/v1/models", headers=AUTH)
        health = await client.get("/health")
        prefixed_health = await client.get("/vllm/health")

    for response in (no_key, wrong_key):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"
    assert models.json()["object"] == "list"
    assert [m["id"] for m in models.json()["data"]] == ["gemma-3-27b-it", MODEL]
    assert {"object": "model", "owned_by": "vllm"}.items() <= models.json()["data"][0].items()
    assert health.status_code == 200 and health.content == b""
    assert prefixed_health.status_code == 200


async def test_error_shapes(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        unknown = await client.post(
            "/v1/chat/completions", json={"model": "gpt-9", "messages": MESSAGES}
        )
        no_messages = await client.post("/v1/chat/completions", json={"model": MODEL})
        usage_without_stream = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "stream_options": {"include_usage": True}},
        )
        too_long = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 500}
        )

    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "NotFoundError"
    assert unknown.json()["error"]["code"] == 404
    assert "gpt-9" in unknown.json()["error"]["message"]
    for response in (no_messages, usage_without_stream, too_long):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "BadRequestError"
    assert "maximum context length is 200" in too_long.json()["error"]["message"]


async def test_recorded_prompts_and_midstream_error(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        await client.delete("/_emulator/prompts")
    body = {"model": "emulator-error-midstream", "messages": MESSAGES, "stream": True}
    events = await sse_events(url, body)
    async with httpx.AsyncClient(base_url=url) as client:
        prompts = (await client.get("/_emulator/prompts")).json()

    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "InternalServerError"
    assert prompts[0]["model"] == "emulator-error-midstream"
    assert prompts[0]["messages_received"] == MESSAGES
    assert prompts[0]["stream"] is True


async def test_fail_status_injection() -> None:
    app = create_app(OpenAICompatConfig(fail_status=429))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )

    assert response.status_code == 429
    assert response.json()["error"]["type"] == "RateLimitError"


STOP_MESSAGES = [{"role": "user", "content": "Where is the STOPHERE teapot?"}]


async def test_stop_cuts_the_streamed_and_whole_reply_before_the_stop_text(url: str) -> None:
    body = {"model": MODEL, "messages": STOP_MESSAGES, "stop": ["never-written", "STOPHERE"]}
    events = await sse_events(url, {**body, "stream": True})
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        whole = (await client.post("/v1/chat/completions", json=body)).json()

    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed.endswith('You said: "Where is the')
    assert "STOPHERE" not in streamed and "teapot" not in streamed
    assert whole["choices"][0]["message"]["content"] == streamed
    finish = events[-2]["choices"][0]
    assert finish["finish_reason"] == whole["choices"][0]["finish_reason"] == "stop"
    assert finish["stop_reason"] == whole["choices"][0]["stop_reason"] == "STOPHERE"
    assert whole["usage"]["completion_tokens"] == count_tokens(streamed)


async def test_a_single_stop_string_is_taken() -> None:
    app = create_app(OpenAICompatConfig())
    transport = httpx.ASGITransport(app=app)
    body = {"model": MODEL, "messages": STOP_MESSAGES, "stop": "STOPHERE", "top_k": -1}
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        data = (await client.post("/v1/chat/completions", json=body)).json()

    assert data["choices"][0]["message"]["content"].endswith('"Where is the')
    assert app.state.recorder.last.sampling == {"stop": "STOPHERE", "top_k": -1}


async def test_sampling_fields_are_recorded_under_their_names() -> None:
    app = create_app(OpenAICompatConfig())
    transport = httpx.ASGITransport(app=app)
    sampling = {
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": -0.5,
        "frequency_penalty": 0.5,
        "seed": 42,
        "stop": ["\nUser:"],
    }
    body = {"model": MODEL, "messages": MESSAGES, "temperature": 0.3}
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        await client.post("/v1/chat/completions", json={**body, **sampling})
        await client.post("/v1/chat/completions", json=body)

    with_sampling, without = app.state.recorder.prompts
    assert with_sampling.sampling == sampling
    assert without.sampling == {}


@pytest.mark.parametrize(
    "field",
    [
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -2},
        {"top_k": 1.5},
        {"min_p": 2},
        {"repetition_penalty": 0},
        {"presence_penalty": 3},
        {"frequency_penalty": "1"},
        {"seed": "1"},
        {"stop": [1]},
    ],
)
async def test_sampling_fields_vllm_refuses_are_400(url: str, field: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": MESSAGES, **field}
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


# Structured outputs: response_format json_schema / json_object; items scripted by the prompt.
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "confidence": {"type": "number"},
                    "topic": {"type": "string", "enum": ["household", "guests"]},
                },
                "required": ["text", "confidence", "topic"],
            },
        },
    },
    "required": ["summary", "facts"],
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "facts", "schema": FACTS_SCHEMA, "strict": True},
}
FACT_MESSAGES = [
    MESSAGES[0],
    {
        "role": "user",
        "content": "The teapot [[text=teapot is in the pantry; confidence=0.9]] "
        "[[text=guests at eight; topic=guests; confidence=1]]",
    },
]


async def complete(body: dict[str, Any]) -> httpx.Response:
    app = create_app(OpenAICompatConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        return await client.post("/v1/chat/completions", json={"model": MODEL, **body})


async def test_a_json_schema_answers_json_that_validates() -> None:
    app = create_app(OpenAICompatConfig())
    transport = httpx.ASGITransport(app=app)
    body = {"model": MODEL, "messages": FACT_MESSAGES}
    async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
        structured = await client.post(
            "/v1/chat/completions", json={**body, "response_format": SCHEMA_FORMAT}
        )
        plain = await client.post("/v1/chat/completions", json=body)

    data = structured.json()
    content = json.loads(data["choices"][0]["message"]["content"])
    jsonschema.validate(content, FACTS_SCHEMA)
    assert content["facts"] == [
        {"text": "teapot is in the pantry", "confidence": 0.9, "topic": "household"},
        {"text": "guests at eight", "confidence": 1, "topic": "guests"},
    ]
    assert content["summary"] == plain.json()["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "stop"
    text = data["choices"][0]["message"]["content"]
    assert data["usage"]["completion_tokens"] == count_tokens(text)
    with_format, without = app.state.recorder.prompts
    assert with_format.format == SCHEMA_FORMAT and without.format is None


async def test_a_structured_reply_streams_with_usage(url: str) -> None:
    body = {"model": MODEL, "messages": FACT_MESSAGES, "response_format": SCHEMA_FORMAT}
    events = await sse_events(
        url, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        whole = (await client.post("/v1/chat/completions", json=body)).json()

    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]["usage"]
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    streamed = "".join(deltas)
    assert streamed == whole["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(streamed), FACTS_SCHEMA)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage["completion_tokens"] == len([d for d in deltas if d]) == count_tokens(streamed)


async def test_max_tokens_cuts_a_structured_reply_into_invalid_json() -> None:
    body = {"messages": FACT_MESSAGES, "response_format": SCHEMA_FORMAT, "max_tokens": 6}
    data = (await complete(body)).json()

    content = data["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == count_tokens(content) == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)  # a model that ran out of tokens: truncated JSON


async def test_json_object_and_text_formats() -> None:
    json_mode = await complete(
        {"messages": FACT_MESSAGES, "response_format": {"type": "json_object"}}
    )
    text_mode = await complete({"messages": FACT_MESSAGES, "response_format": {"type": "text"}})
    plain = await complete({"messages": FACT_MESSAGES})
    # OpenAI's reference makes json_schema.schema optional: without it, any JSON object.
    no_schema = await complete(
        {
            "messages": FACT_MESSAGES,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        }
    )

    reply = plain.json()["choices"][0]["message"]["content"]
    assert text_mode.json()["choices"][0]["message"]["content"] == reply
    expected = {
        "content": reply,
        "items": [
            {"text": "teapot is in the pantry", "confidence": "0.9"},
            {"text": "guests at eight", "topic": "guests", "confidence": "1"},
        ],
    }
    for response in (json_mode, no_schema):
        assert json.loads(response.json()["choices"][0]["message"]["content"]) == expected


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        ({"type": "json_schema"}, "the 'json_schema' field must be provided"),
        ({"type": "object"}, "Input should be 'text', 'json_object' or 'json_schema'"),
        ("json", "must be an object"),
        ({"type": "json_schema", "json_schema": {"schema": FACTS_SCHEMA}}, "name"),
        ({"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}, "strict"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}},
            "schema",
        ),
    ],
)
async def test_a_malformed_response_format_is_a_400_naming_it(
    response_format: Any, words: str
) -> None:
    response = await complete({"messages": MESSAGES, "response_format": response_format})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert error["param"] == "response_format"
    assert words in error["message"]
