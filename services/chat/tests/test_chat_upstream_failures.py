"""Each way the LLM server can fail gets its own status within the configured timeout, and
the chat service keeps serving afterwards."""

import asyncio
import contextlib
import json
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_devstack.testing import with_lifespan_state
from avatar_emulators.replies import DEFAULT_MODELS, ERROR_MIDSTREAM_MESSAGE, ERROR_MIDSTREAM_MODEL
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import current_identity
from tests.helpers import logged

from .helpers import (
    FAST_TIMEOUTS,
    as_signed_in,
    ask,
    callers_from_test_headers,
    chat_settings,
    emulated_llm,
    read_events,
)


async def test_connection_refused_is_503(app_client, redis_url, backend_name):
    dead = f"http://127.0.0.1:{free_port()}"
    key = "ollama_base_url" if backend_name == "ollama" else "vllm_base_url"
    settings = chat_settings(redis_url, llm_service=backend_name, **{key: dead})
    async with app_client(create_app(settings)) as chat:
        response = await chat.post("/api/chat", json=ask("hi"))
        models = await chat.get("/api/chat/models")
    assert (response.status_code, response.json()["error"]["code"]) == (503, "llm_unavailable")
    assert (models.status_code, models.json()["error"]["code"]) == (503, "llm_unavailable")


async def test_slow_llm_is_504_within_the_timeout(app_client, redis_url, backend_name):
    with emulated_llm(backend_name, first_token_latency_s=5) as backend:
        settings = chat_settings(redis_url, **backend.settings, **FAST_TIMEOUTS)
        async with app_client(create_app(settings)) as chat:
            started = time.perf_counter()
            response = await chat.post("/api/chat", json=ask("hi"))
            elapsed = time.perf_counter() - started
            streamed = await chat.post("/api/chat", json=ask("hi", stream=True))
    assert (response.status_code, response.json()["error"]["code"]) == (504, "llm_timeout")
    assert elapsed < 2
    assert streamed.status_code == 504


async def test_a_streamed_reply_slower_than_the_total_timeout_is_504_within_it(
    app_client, redis_url, backend_name
):
    """LLM_TOTAL_TIMEOUT_S bounds a stream as it does a whole reply, however long the read
    timeout lets one wait for bytes: the first token comes at 8 s, the total is 1 s."""
    with emulated_llm(backend_name, first_token_latency_s=8) as backend:
        timeouts = {"llm_total_timeout_s": 1.0, "llm_read_timeout_s": 30.0}
        settings = chat_settings(redis_url, **backend.settings, **timeouts)
        async with app_client(create_app(settings)) as chat:
            started = time.perf_counter()
            streamed = await chat.post("/api/chat", json=ask("hi", stream=True))
            elapsed = time.perf_counter() - started
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (504, "llm_timeout")
    assert elapsed < 5  # well under the 8 s of the first token


async def test_unknown_model_is_404_naming_it(chat):
    response = await chat.post("/api/chat", json=ask("hi", model="no-such-model"))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and "no-such-model" in error["message"]


async def test_upstream_500_is_502_with_its_text_in_the_log_only(
    app_client, redis_url, backend_name
):
    with emulated_llm(backend_name, fail_status=500) as backend, logged("avatar") as records:
        settings = chat_settings(redis_url, **backend.settings)
        async with app_client(create_app(settings)) as chat:
            response = await chat.post("/api/chat", json=ask("hi"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "llm_error" and "500" in error["message"]
    assert "injected failure" not in error["message"]  # the server's own text...
    assert any("injected failure" in r.getMessage() for r in records)  # ...is logged


def garbage_server() -> FastAPI:
    app = FastAPI()
    for path in ("/api/chat", "/v1/chat/completions"):
        app.post(path)(lambda: PlainTextResponse("<html>definitely not json</html>"))
    return app


async def test_malformed_upstream_body_is_502(app_client, redis_url, backend_name):
    with serve_in_thread(garbage_server()) as url:
        key = "ollama_base_url" if backend_name == "ollama" else "vllm_base_url"
        settings = chat_settings(redis_url, llm_service=backend_name, **{key: url})
        async with app_client(create_app(settings)) as chat:
            response = await chat.post("/api/chat", json=ask("hi"))
            streamed = await chat.post("/api/chat", json=ask("hi", stream=True))
    assert (response.status_code, response.json()["error"]["code"]) == (502, "llm_error")
    assert streamed.status_code == 502


async def test_failure_mid_stream_ends_with_an_error_event(
    app_client, redis_url, redis, backend_name
):
    # The emulator fails this model's stream part way; the server lists it like any other.
    with emulated_llm(backend_name, models=[*DEFAULT_MODELS, ERROR_MIDSTREAM_MODEL]) as backend:
        async with app_client(create_app(chat_settings(redis_url, **backend.settings))) as chat:
            body = ask("hi", stream=True, model=ERROR_MIDSTREAM_MODEL)
            async with chat.stream("POST", "/api/chat", json=body) as response:
                assert response.status_code == 200
                events = await read_events(response)
            assert await redis.keys("chat:session*") == []  # the broken turn is not stored
            again = await chat.post("/api/chat", json=ask("again"))
    assert events[0][0] == "delta"
    kind, error = events[-1]
    assert kind == "error" and error["code"] == "llm_error" and error["message"]
    assert ERROR_MIDSTREAM_MESSAGE not in error["message"]
    assert again.status_code == 200  # ...and the service keeps serving.


async def test_first_delta_arrives_before_generation_ends(redis_url, backend_name):
    # Over real HTTP: httpx's ASGITransport would collect the whole stream first.
    with emulated_llm(backend_name, tokens_per_second=40) as backend:
        app = create_app(chat_settings(redis_url, **backend.settings))
        with serve_in_thread(app, lifespan="on") as url:
            chat = httpx.AsyncClient(base_url=url, trust_env=False)
            started = time.perf_counter()
            arrivals = []
            async with chat.stream("POST", "/api/chat", json=ask("천천히", stream=True)) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        arrivals.append((line, time.perf_counter() - started))
            await chat.aclose()
    assert arrivals[-1][0] == "event: done"
    assert arrivals[0][1] < arrivals[-1][1] / 3


async def test_character_id_brings_the_persona_from_the_characters_service(redis_url, backend):
    characters = characters_app(CharactersSettings(redis_url=redis_url))
    with serve_in_thread(characters, lifespan="on") as characters_url:
        settings = ChatSettings(
            redis_url=redis_url, characters_url=characters_url, **backend.settings
        )
        app = create_app(settings)
        with serve_in_thread(app, lifespan="on") as chat_url:
            async with httpx.AsyncClient(base_url=chat_url, trust_env=False) as chat:
                body = {
                    "messages": [{"role": "user", "content": "안녕"}],
                    "character_id": "hermione",
                }
                found = await chat.post("/api/chat", json=body)
                missing = await chat.post("/api/chat", json={**body, "character_id": "nobody"})
    assert found.status_code == 200, found.text
    system = backend.recorder.prompts[-1].messages_received[0]["content"]
    assert "헤르미온느 그레인저" in system and "그리핀도르" in system
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "character_not_found"


@pytest.mark.parametrize("stream", [False, True])
async def test_characters_service_down_gives_503(chat, backend, stream):
    body = {**ask("hi", character_id="hermione", stream=stream), "persona": None}
    response = await asyncio.wait_for(chat.post("/api/chat", json=body), timeout=5)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "characters_unavailable"


async def test_model_list_marks_the_default_first(chat):
    models = (await chat.get("/api/chat/models")).json()["data"]["models"]
    assert models[0] == {"id": "gemma-3-27b-it", "name": "Gemma 3 27B IT (Default)"}
    assert {"id": "dolphin-2.9-8b", "name": "Dolphin 2.9 8B"} in models


async def test_a_client_that_leaves_stops_the_upstream(redis_url, redis, backend_name):
    with emulated_llm(backend_name, tokens_per_second=20) as backend:
        app = create_app(chat_settings(redis_url, **backend.settings))
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as chat:
                body = ask("길게 말해줘", stream=True)
                async with chat.stream("POST", "/api/chat", json=body) as response:
                    lines = response.aiter_lines()
                    async for line in lines:
                        if line.startswith("event: delta"):
                            seen = json.loads((await anext(lines)).removeprefix("data: "))
                            break  # leave after the first delta
                await asyncio.sleep(1.0)
                sent = backend.recorder.prompts[-1].tokens_sent
                await asyncio.sleep(1.0)
                assert backend.recorder.prompts[-1].tokens_sent == sent  # nothing more generated
                session = await only_session(redis)
                history = (await chat.get(f"/api/chat/sessions/{session}")).json()["data"]
    assert sent < 40  # of a reply of well over 50 tokens at 20/s
    # What the client was sent is recorded, marked interrupted: it starts with what it read,
    # and holds no more than was generated.
    user, reply = history["messages"]
    assert user["content"] == "길게 말해줘" and not user["interrupted"]
    assert reply["interrupted"] is True
    assert reply["content"].startswith(seen["content"])
    assert len(reply["content"].split()) <= sent


async def only_session(redis) -> str:
    [key] = [k for k in await redis.keys("chat:session:*") if k.count(":") == 2]
    return key.rsplit(":", 1)[1]


def odd_usage_server() -> FastAPI:
    """An OpenAI-compatible server whose usage counts are not integers."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions() -> dict:
        return {
            "choices": [{"message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 1.5, "completion_tokens": "two"},
        }

    return app


async def test_non_integer_usage_is_a_502_and_stores_nothing(app_client, redis_url, redis):
    with serve_in_thread(odd_usage_server()) as url:
        settings = chat_settings(redis_url, llm_service="vllm", vllm_base_url=url)
        async with app_client(create_app(settings)) as chat:
            response = await chat.post("/api/chat", json=ask("hi"))
    assert (response.status_code, response.json()["error"]["code"]) == (502, "llm_error")
    assert await redis.keys("chat:session*") == []


async def call_and_leave_at_once(app: FastAPI, body: dict) -> None:
    """An ASGI 2.4 server's view of a client that is gone before the response starts: its
    first `send` raises OSError."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    request = {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
    messages = iter([request])

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        raise OSError("the client is gone")

    with contextlib.suppress(Exception):
        await app(scope, receive, send)


async def test_a_client_gone_before_the_first_byte_leaves_no_llm_slot_taken(
    app_client, redis_url, backend
):
    """The events never run, so they cannot release anything; the slot and the admission
    are context managers, which are released when the abandoned stream is finalized."""
    settings = chat_settings(
        redis_url, llm_max_in_flight=1, llm_queue_wait_s=0.5, **backend.settings
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        await call_and_leave_at_once(with_lifespan_state(app, state), ask("hi", stream=True))
        await asyncio.sleep(0.2)  # what the stream held is released in the background
        transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as chat:
            response = await chat.post("/api/chat", json=ask("and now?"))
    assert response.status_code == 200, response.text  # not 503 llm_busy: the slot is free


async def test_a_client_gone_while_waiting_for_the_first_token_frees_its_slot(
    redis_url, backend_name
):
    """No response exists before the first token, so the server watches for the client
    meanwhile: one that leaves while the model is slow to start (4 s here) gives back its
    LLM slot and closes the upstream request at once, not when that token comes."""
    with emulated_llm(backend_name, first_token_latency_s=4) as slow:
        settings = chat_settings(
            redis_url,
            llm_max_in_flight=1,
            llm_queue_wait_s=2,
            chat_rate_per_min=10_000,
            **slow.settings,
        )
        app = create_app(settings)
        app.dependency_overrides[current_identity] = callers_from_test_headers
        alice, bob = as_signed_in("alice", "10.0.0.1"), as_signed_in("bob", "10.0.0.2")
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as client:
                body = ask("hi", stream=True, tts_enabled=False)
                leaving = asyncio.create_task(client.post("/api/chat", json=body, headers=alice))
                deadline = time.monotonic() + 10
                while not slow.recorder.prompts:  # it holds the only slot, waiting for a token
                    assert time.monotonic() < deadline, "the request never reached the LLM"
                    await asyncio.sleep(0.02)
                leaving.cancel()  # the connection is closed: the client is gone
                other = await client.post("/api/chat", json=body, headers=bob)
    assert other.status_code == 200, other.text  # not 503 llm_busy after 2 s in line
    assert slow.recorder.prompts[0].tokens_sent == 0  # the first upstream request was closed
