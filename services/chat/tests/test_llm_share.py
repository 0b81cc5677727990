"""Who gets the LLM: at most LLM_CALLS_PER_USER turns of one caller in flight (and
LLM_CALLS_PER_ADDRESS of one address's anonymous callers), counted in Redis with leases that
end with the turn; the replica's waiting calls served caller by caller; a streamed reply whose
client stopped reading ended after STREAM_WRITE_TIMEOUT_S; LLM stream lines capped."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import Any

import httpx

from avatar_chat.app import create_app
from avatar_chat.errors import LlmBusy
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators.replies import DEFAULT_MODELS, LONG_REPLY_MODEL
from avatar_emulators.server import serve_in_thread
from avatar_shared.gate import Gate
from avatar_shared.identity import ANON_COOKIE, current_identity
from tests.helpers import as_user, returning_visitor

from .helpers import (
    PERSONA,
    as_anonymous,
    ask,
    callers_from_test_headers,
    emulated_llm,
    no_turn_in_flight,
)
from .summarizing import Conversation, idle, long_history, summary_calls, summary_calls_started
from .summarizing import settings_for as summarizing


def settings_for(redis_url: str, backend, **extra) -> ChatSettings:
    return ChatSettings(
        redis_url=redis_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        characters_url=f"http://127.0.0.1:{free_port()}",
        chat_rate_per_min=10_000,
        **extra,
        **backend.settings,
    )


def with_test_callers(settings: ChatSettings):
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    return app


async def turn(chat, headers: dict[str, str], **extra) -> httpx.Response:
    return await chat.post("/api/chat", json=ask("hi", tts_enabled=False, **extra), headers=headers)


async def test_one_caller_cannot_take_every_llm_slot(app_client, redis_url):
    with emulated_llm("ollama", first_token_latency_s=0.5) as slow:
        settings = settings_for(redis_url, slow, llm_max_in_flight=8, llm_calls_per_user=2)
        async with app_client(with_test_callers(settings)) as chat:
            theirs = [turn(chat, as_user("mallory")) for _ in range(8)]
            *flood, victim = await asyncio.gather(*theirs, turn(chat, as_user("alice")))
            after = await turn(chat, as_user("mallory"))  # their turns ended: leases too
    statuses = sorted(r.status_code for r in flood)
    assert statuses == [200, 200] + [429] * 6
    refused = next(r for r in flood if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "At most 2 of yours" in refused.json()["error"]["message"]
    assert victim.status_code == 200
    assert after.status_code == 200


async def test_one_addresses_anonymous_ids_share_their_llm_calls(app_client, redis_url):
    with emulated_llm("ollama", first_token_latency_s=0.5) as slow:
        settings = settings_for(redis_url, slow, llm_calls_per_user=2, llm_calls_per_address=3)
        async with app_client(with_test_callers(settings)) as chat:
            ids = [turn(chat, as_anonymous(f"anon-{n}", "10.0.0.66")) for n in range(6)]
            *flood, other = await asyncio.gather(
                *ids, turn(chat, as_anonymous("anon-z", "10.9.9.9"))
            )
    assert sorted(r.status_code for r in flood) == [200] * 3 + [429] * 3
    refused = next(r for r in flood if r.status_code == 429)
    assert "3 of this address's anonymous callers" in refused.json()["error"]["message"]
    assert other.status_code == 200


async def test_a_failed_turn_gives_its_lease_back(app_client, redis_url):
    down = {"ollama_base_url": f"http://127.0.0.1:{free_port()}"}
    with emulated_llm("ollama") as backend:
        settings = settings_for(redis_url, backend, llm_calls_per_user=1)
        settings = settings.model_copy(update=down)
        async with app_client(with_test_callers(settings)) as chat:
            failed = [await turn(chat, as_user("alice")) for _ in range(3)]
    assert [r.json()["error"]["code"] for r in failed] == ["llm_unavailable"] * 3


async def test_waiting_calls_take_free_slots_caller_by_caller():
    gate = Gate(1, 5.0, LlmBusy)
    order: list[str] = []
    release = asyncio.Event()

    async def call(caller: str, name: str) -> None:
        async with gate.slot(caller):
            order.append(name)
            await release.wait()

    holder = asyncio.create_task(call("first", "holder"))
    await asyncio.sleep(0)
    waiting = []
    for caller, name in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1")]:
        waiting.append(asyncio.create_task(call(caller, name)))
        await asyncio.sleep(0)  # queued in this order
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["holder", "a1", "b1", "c1", "a2", "a3"]


async def test_a_call_that_gives_up_waiting_leaves_no_slot_behind():
    gate = Gate(1, 0.05, LlmBusy)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot("a"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    refused = await asyncio.gather(*(_try(gate, "b") for _ in range(3)))
    release.set()
    await holder
    assert refused == [False] * 3
    assert await _try(gate, "c") and gate.free == 1  # one place, free again


async def _try(gate: Gate, caller: str) -> bool:
    try:
        async with gate.slot(caller):
            return True
    except LlmBusy:
        return False


async def test_a_streaming_client_that_stops_reading_gives_its_slot_back(
    redis, redis_url, backend_name
):
    async with stalled_visitor(redis_url, backend_name, llm_calls_per_user=1) as client:
        held = await turn(client, {})
        admitted = await first_admitted(client)
    assert held.status_code == 429  # the stalled stream holds the caller's one lease
    assert admitted.status_code == 200, admitted.text


async def test_a_new_session_whose_stalled_stream_was_recorded_keeps_its_active_place(
    redis, redis_url, backend_name
):
    """A client that stops reading a new session's stream has what it was sent recorded; the
    session then exists, and is active as any other: its place is not given back to the
    next newcomer as a failed turn's would be."""
    async with stalled_visitor(redis_url, backend_name, max_concurrent_users=1) as client:
        await no_turn_in_flight(redis)  # the stalled stream was stopped, and recorded
        [stopped] = [
            k.rsplit(":", 1)[1] for k in await redis.keys("chat:session:*") if k.count(":") == 2
        ]
        active = await redis.zrange("chat:active", 0, -1)
        client.cookies.clear()  # someone else, new
        newcomer = await turn(client, {})
    assert stopped in active, active
    assert newcomer.status_code == 503, newcomer.text
    assert newcomer.json()["error"]["code"] == "too_many_users"


@asynccontextmanager
async def stalled_visitor(
    redis_url: str, backend_name: str, **extra: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A returning visitor's client, whose long streamed reply it has stopped reading: the
    stream is stopped once a send has waited 1 s (STREAM_WRITE_TIMEOUT_S)."""
    with emulated_llm(backend_name, models=[*DEFAULT_MODELS, LONG_REPLY_MODEL]) as backend:
        settings = settings_for(redis_url, backend, stream_write_timeout_s=1.0, **extra)
        with serve_in_thread(create_app(settings), lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url) as client:
                returning_visitor(client)
                cookie = f"{ANON_COOKIE}={client.cookies[ANON_COOKIE]}"
                with closing(stalled_stream(url, cookie)):
                    yield client


def stalled_stream(url: str, cookie: str) -> socket.socket:
    """A client that asks for a long streamed reply, reads the response's head, then stops
    reading (with a small receive buffer, so the server's sends soon block)."""
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "persona": PERSONA,
            "model": LONG_REPLY_MODEL,
            "max_tokens": 4096,
            "stream": True,
            "tts_enabled": False,
        }
    ).encode()
    host, port = url.removeprefix("http://").split(":")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((host, int(port)))
    head = (
        f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Cookie: {cookie}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    client.sendall(head.encode() + body)
    assert client.recv(64).startswith(b"HTTP/1.1 200"), "the stream did not start"
    return client


async def first_admitted(client: httpx.AsyncClient, attempts: int = 60) -> httpx.Response:
    """The caller's requests, once a second, until one is admitted (or the last refusal)."""
    for _ in range(attempts):
        response = await turn(client, {})
        if response.status_code != 429:
            return response
        await asyncio.sleep(1)
    return response


async def test_an_over_long_stream_line_ends_the_reply_with_a_502(
    app_client, redis_url, backend_name
):
    with emulated_llm(backend_name, models=[*DEFAULT_MODELS, LONG_REPLY_MODEL]) as backend:
        settings = settings_for(redis_url, backend, llm_max_line_bytes=4096)
        async with app_client(create_app(settings)) as chat:
            returning_visitor(chat)
            response = await chat.post(
                "/api/chat", json=ask("hi", model=LONG_REPLY_MODEL, stream=True, tts_enabled=False)
            )
            after = await chat.post("/api/chat", json=ask("hi", tts_enabled=False))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "llm_error"
    assert "longer than 4096 bytes" in response.json()["error"]["message"]
    assert after.status_code == 200  # nothing was left held


async def test_a_callers_background_work_takes_only_a_place_their_turns_leave_free(
    app_client, redis_url
):
    """A summary made ahead is LLM work its caller caused: it takes a place among their
    LLM_CALLS_PER_USER only when their turns leave one, and their turns never count it. So
    while it runs their next turn is answered (not 429), and that turn's own summary ahead
    is put off (not one more call in flight), while another caller's turn goes on."""
    # A summary: ~3 s. Made ahead at 0.2 of the window: counted as the model counted the
    # first reply's prompt (fewer tokens than the default estimate), 6 old turns are past it.
    with emulated_llm("ollama", tokens_per_second=20) as backend:
        settings = summarizing(
            redis_url, backend, llm_max_in_flight=3, llm_queue_wait_s=0.5,
            llm_calls_per_user=1, keep_recent_turns=4, summary_ahead_ratio=0.2,
        )  # fmt: skip
        async with app_client(create_app(settings)) as chat:
            returning_visitor(chat)  # one browser, known from the first request
            talks = [Conversation(chat, backend.recorder) for _ in range(2)]
            for talk in talks:
                long_history(talk, 6)
            first = await chat.post("/api/chat", json=talks[0].body() | {"max_tokens": 1})
            assert first.status_code == 200, first.text
            assert await summary_calls_started(backend.recorder, 1)
            again = await chat.post("/api/chat", json=talks[1].body() | {"max_tokens": 1})
            hers = dict(chat.cookies)
            chat.cookies.clear()  # someone else
            other = await chat.post("/api/chat", json=ask("hi", tts_enabled=False, max_tokens=1))
            chat.cookies.update(hers)
            await idle(backend.recorder)
    assert again.status_code == 200, again.text
    assert other.status_code == 200, other.json()
    assert len(summary_calls(backend.recorder)) == 1  # the second was put off, not run beside
