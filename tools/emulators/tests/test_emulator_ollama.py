"""Behaviour of the Ollama emulator as an HTTP client sees it (real uvicorn server)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from avatar_emulators.ollama import OllamaConfig, create_app
from avatar_emulators.replies import MESSAGE_OVERHEAD_TOKENS, count_tokens
from avatar_emulators.server import serve_in_thread

MODEL = "gemma-3-27b-it"
PERSONA = "You are Captain Mira, a cheerful starship pilot."


@pytest.fixture(scope="module")
def app_and_url() -> Iterator[tuple[Any, str]]:
    app = create_app()
    with serve_in_thread(app) as url:
        yield app, url


@pytest.fixture
def url(app_and_url: tuple[Any, str]) -> str:
    app_and_url[0].state.recorder.clear()
    return app_and_url[1]


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": PERSONA}, {"role": "user", "content": text}]
    return {"model": MODEL, "messages": messages, **extra}


async def stream_lines(url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict]]:
    async with httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/api/chat", json=body) as response:
            lines = [json.loads(line) async for line in response.aiter_lines() if line]
    return response, lines


async def test_stream_is_default_and_final_line_counts_tokens(url: str) -> None:
    response, lines = await stream_lines(url, chat_body("Tell me about the nebula ahead"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    chunks, final = lines[:-1], lines[-1]
    assert len(chunks) > 10
    assert all(c["done"] is False and c["message"]["role"] == "assistant" for c in chunks)
    assert all(c["model"] == MODEL and c["created_at"].endswith("Z") for c in chunks)
    reply = "".join(c["message"]["content"] for c in chunks)
    assert "emulator" in reply
    assert "Tell me about the nebula ahead" in reply
    assert "Captain Mira" in reply
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == len(chunks) == count_tokens(reply)
    expected_prompt = count_tokens(PERSONA) + 6 + 2 * MESSAGE_OVERHEAD_TOKENS
    assert final["prompt_eval_count"] == expected_prompt
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0


async def test_non_streaming_answer_matches_streamed_text(url: str) -> None:
    body = chat_body("Say hi", stream=False, options={"temperature": 0.2})
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/chat", json=body)
    _, lines = await stream_lines(url, chat_body("Say hi", options={"temperature": 0.2}))

    data = response.json()
    assert response.status_code == 200
    assert data["done"] is True
    assert data["message"]["content"] == "".join(c["message"]["content"] for c in lines[:-1])
    assert "0.2" in data["message"]["content"]
    assert data["eval_count"] == count_tokens(data["message"]["content"])


async def test_num_predict_caps_reply(url: str) -> None:
    _, lines = await stream_lines(url, chat_body("Hello", options={"num_predict": 5}))

    assert len(lines) == 6
    assert lines[-1]["eval_count"] == 5
    assert lines[-1]["done_reason"] == "length"


async def test_num_ctx_drops_oldest_non_system_messages(app_and_url: tuple[Any, str]) -> None:
    app, url = app_and_url
    app.state.recorder.clear()
    history = [{"role": "system", "content": PERSONA}]
    for i in range(6):
        history.append({"role": "user", "content": f"old question number {i} " + "word " * 10})
        history.append({"role": "assistant", "content": f"old answer number {i}"})
    history.append({"role": "user", "content": "latest question"})
    body = {"model": MODEL, "messages": history, "stream": False, "options": {"num_ctx": 60}}

    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/chat", json=body)
        over_http = (await client.get("/_emulator/prompts")).json()
        cleared = await client.delete("/_emulator/prompts")
        after_clear = (await client.get("/_emulator/prompts")).json()

    assert response.status_code == 200
    assert response.json()["prompt_eval_count"] <= 60
    assert over_http[-1]["dropped"] > 0
    assert over_http[-1]["messages_received"] == history
    used = over_http[-1]["messages_used"]
    assert used[0] == history[0] and used[-1] == history[-1]
    assert len(used) == len(history) - over_http[-1]["dropped"]
    assert over_http[-1]["prompt_tokens"] == response.json()["prompt_eval_count"]
    assert over_http[-1]["options"] == {"num_ctx": 60}
    assert over_http[-1]["stream"] is False
    assert cleared.status_code == 204 and after_clear == []
    assert app.state.recorder.prompts == []


async def test_recorder_object_holds_prompt(app_and_url: tuple[Any, str]) -> None:
    app, url = app_and_url
    app.state.recorder.clear()
    await stream_lines(url, chat_body("Recorded?"))

    (record,) = app.state.recorder.prompts
    assert record.model == MODEL
    assert record.dropped == 0
    assert record.stream is True
    assert record.messages_used[-1]["content"] == "Recorded?"


async def test_unknown_model_and_bad_body(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        unknown = await client.post("/api/chat", json={"model": "nope", "messages": []})
        show_unknown = await client.post("/api/show", json={"model": "nope"})
        not_json = await client.post("/api/chat", content=b"{not json")
        bad_messages = await client.post("/api/chat", json={"model": MODEL, "messages": "hi"})
        no_model = await client.post("/api/chat", json={"messages": []})

    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope' not found"}
    assert show_unknown.status_code == 404
    assert show_unknown.json() == {"error": "model 'nope' not found"}
    for response in (not_json, bad_messages, no_model):
        assert response.status_code == 400
        assert isinstance(response.json()["error"], str)


async def test_metadata_endpoints(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        root = await client.get("/")
        version = await client.get("/api/version")
        tags = await client.get("/api/tags")
        show = await client.post("/api/show", json={"model": f"{MODEL}:latest"})

    assert root.text == "Ollama is running"
    assert isinstance(version.json()["version"], str)
    names = [m["name"] for m in tags.json()["models"]]
    assert names == ["gemma-3-27b-it:latest", "dolphin-2.9-8b:latest"]
    first = tags.json()["models"][0]
    assert {"model", "modified_at", "size", "digest", "details"} <= first.keys()
    assert show.status_code == 200 and "details" in show.json()


async def test_error_midstream_model_sends_error_line(url: str) -> None:
    body = {"model": "emulator-error-midstream", "messages": [{"role": "user", "content": "x"}]}
    response, lines = await stream_lines(url, body)

    assert response.status_code == 200
    assert lines[0]["done"] is False
    assert "error" in lines[-1]
    assert all("error" not in line for line in lines[:-1])


async def test_fail_status_and_latency() -> None:
    failing = create_app(OllamaConfig(fail_status=503))
    slow = create_app(OllamaConfig(first_token_latency_s=0.2, tokens_per_second=200))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=failing), base_url="http://e"
    ) as c:
        failed = await c.post("/api/chat", json=chat_body("hi"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://e") as c:
        started = time.monotonic()
        answered = await c.post("/api/chat", json=chat_body("hi", stream=False))
        elapsed = time.monotonic() - started

    assert failed.status_code == 503 and "error" in failed.json()
    n_tokens = answered.json()["eval_count"]
    assert elapsed >= 0.2 + (n_tokens - 1) / 200 - 0.02


STOP_TEXT = "Tell me about the STOPHERE nebula"


async def test_stop_cuts_the_streamed_and_whole_reply_before_the_stop_text(url: str) -> None:
    body = chat_body(STOP_TEXT, options={"stop": ["STOPHERE", "never-written"]})
    _, lines = await stream_lines(url, body)
    async with httpx.AsyncClient(base_url=url) as client:
        whole = (await client.post("/api/chat", json={**body, "stream": False})).json()

    streamed = "".join(line["message"]["content"] for line in lines)
    assert streamed.endswith('You said: "Tell me about the')
    assert "STOPHERE" not in streamed and "nebula" not in streamed
    assert whole["message"]["content"] == streamed
    assert lines[-1]["done_reason"] == whole["done_reason"] == "stop"
    assert whole["eval_count"] == count_tokens(streamed)


async def test_sampling_options_are_recorded_under_ollamas_names(
    url: str, app_and_url: tuple[Any, str]
) -> None:
    options = {
        "temperature": 0.3,
        "num_ctx": 2048,
        "top_p": 0.9,
        "top_k": 0,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "presence_penalty": -0.5,
        "frequency_penalty": 0.5,
        "seed": 42,
        "stop": ["\nUser:"],
    }
    async with httpx.AsyncClient(base_url=url) as client:
        await client.post("/api/chat", json=chat_body("hi", stream=False, options=options))
        await client.post("/api/chat", json=chat_body("hi", stream=False))

    with_options, without = app_and_url[0].state.recorder.prompts
    assert with_options.sampling == {
        k: v for k, v in options.items() if k not in ("temperature", "num_ctx")
    }
    assert without.sampling == {}


@pytest.mark.parametrize(
    "options", [{"stop": "User:"}, {"stop": [1]}, {"top_k": 1.5}, {"seed": "1"}, {"top_p": "x"}]
)
async def test_badly_typed_sampling_options_are_400(url: str, options: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/chat", json=chat_body("hi", options=options))

    assert response.status_code == 400
    assert "error" in response.json()


# Structured outputs: `format` is "json" or a JSON schema; the items are scripted by the prompt.
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
                    "importance": {"type": "integer"},
                    "private": {"type": "boolean"},
                },
                "required": ["text", "importance"],
            },
        },
    },
    "required": ["summary", "facts"],
}
FACTS_PROMPT = (
    "Extract the new facts. [[text=Mira flies a red shuttle; importance=3]] "
    "[[text=Mira hates rain; private=true]] [[text=Mira flies a red shuttle; importance=3]]"
)


async def post_chat(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.post("/api/chat", json=body)


async def test_a_schema_format_answers_json_that_validates(
    url: str, app_and_url: tuple[Any, str]
) -> None:
    response = await post_chat(url, chat_body(FACTS_PROMPT, stream=False, format=FACTS_SCHEMA))
    plain = await post_chat(url, chat_body(FACTS_PROMPT, stream=False))

    data = response.json()
    content = json.loads(data["message"]["content"])
    jsonschema.validate(content, FACTS_SCHEMA)
    assert content["facts"] == [
        {"text": "Mira flies a red shuttle", "importance": 3, "private": False},
        {"text": "Mira hates rain", "importance": 0, "private": True},
    ]
    assert content["summary"] == plain.json()["message"]["content"]
    assert data["done_reason"] == "stop"
    assert data["eval_count"] == count_tokens(data["message"]["content"])
    with_format, without = app_and_url[0].state.recorder.prompts
    assert with_format.format == FACTS_SCHEMA and without.format is None


async def test_a_structured_reply_streams_like_any_reply(url: str) -> None:
    _, lines = await stream_lines(url, chat_body(FACTS_PROMPT, format=FACTS_SCHEMA))
    whole = await post_chat(url, chat_body(FACTS_PROMPT, stream=False, format=FACTS_SCHEMA))

    chunks, final = lines[:-1], lines[-1]
    streamed = "".join(c["message"]["content"] for c in chunks)
    assert len(chunks) > 10
    assert streamed == whole.json()["message"]["content"]
    jsonschema.validate(json.loads(streamed), FACTS_SCHEMA)
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == len(chunks) == count_tokens(streamed)


async def test_num_predict_cuts_a_structured_reply_into_invalid_json(url: str) -> None:
    options = {"num_predict": 8}
    body = chat_body(FACTS_PROMPT, stream=False, format=FACTS_SCHEMA, options=options)
    data = (await post_chat(url, body)).json()
    _, lines = await stream_lines(url, {**body, "stream": True})

    content = data["message"]["content"]
    assert data["done_reason"] == lines[-1]["done_reason"] == "length"
    assert data["eval_count"] == count_tokens(content) == 8
    assert content.startswith('{"summary": "This reply')
    assert "".join(line["message"]["content"] for line in lines) == content
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)  # a model that ran out of tokens: truncated JSON


async def test_json_format_answers_the_reply_and_items_as_an_object(url: str) -> None:
    json_mode = await post_chat(url, chat_body(FACTS_PROMPT, stream=False, format="json"))
    plain = await post_chat(url, chat_body(FACTS_PROMPT, stream=False))

    assert json.loads(json_mode.json()["message"]["content"]) == {
        "content": plain.json()["message"]["content"],
        "items": [
            {"text": "Mira flies a red shuttle", "importance": "3"},
            {"text": "Mira hates rain", "private": "true"},
        ],
    }


@pytest.mark.parametrize("unset", [None, ""])
async def test_null_and_empty_format_mean_no_format(url: str, unset: Any) -> None:
    with_unset = await post_chat(url, chat_body("Hello", stream=False, format=unset))
    plain = await post_chat(url, chat_body("Hello", stream=False))

    assert with_unset.json()["message"]["content"] == plain.json()["message"]["content"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("yaml", 'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'),
        ([1, 2], 'invalid format: "[1,2]"; expected "json" or a valid JSON Schema object'),
        ({"type": "objekt"}, "invalid JSON schema in format"),
    ],
)
async def test_an_invalid_format_is_a_500_before_any_token(
    url: str, value: Any, error: str, stream: bool
) -> None:
    # Ollama's runner refuses the format before generating (llm/server.go), and streamResponse
    # sends an error that comes before any content with its status (500), as JSON.
    response = await post_chat(url, chat_body("Hello", stream=stream, format=value))

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": error}
