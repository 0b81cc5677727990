"""Chat against a hostile client, on the real stack with the production defaults
(MAX_CONCURRENT_USERS 20, MAX_SESSIONS_PER_USER 3, MAX_SESSIONS_PER_ADDRESS 6,
LLM_MAX_IN_FLIGHT 8, LLM_CALLS_PER_USER 2, STREAM_WRITE_TIMEOUT_S 10,
MAX_STORED_SESSIONS_PER_ADDRESS 20): ids minted at one address buy no more than the
address's share of chat places, nor of stored conversations; one caller's parallel requests
do not take every LLM slot; a streaming client that stops reading gives its slot back.

Each test speaks from addresses of its own (127.0.40-49.x) and deletes the sessions it
made, so the places it took are free for the next."""

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis

from avatar_emulators.replies import LONG_REPLY_MODEL
from avatar_shared.identity import ANON_COOKIE
from tests.helpers import client_from, returning_visitor

PLACES, ADDRESS_SHARE, CALLS_PER_USER, STORED_PER_ADDRESS = 20, 6, 2, 20
PERSONA = "A cheerful librarian."


def ask(text: str = "hi", **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": text}],
        "persona": PERSONA,
        "tts_enabled": False,
        **extra,
    }


async def forget(client: httpx.AsyncClient, responses: list[httpx.Response]) -> None:
    """Deletes the sessions `responses` made (their places go back)."""
    for response in responses:
        if response.status_code == 200:
            session_id = response.json()["data"]["session_id"]
            await client.delete(f"/api/chat/sessions/{session_id}")


async def test_ids_minted_at_one_address_hold_no_more_than_its_share_of_places(abuse_stack):
    url = abuse_stack.gateway_url
    async with AsyncExitStack() as clients:
        attackers = [  # 7 ids of one address, 3 sessions each, as in the audit
            await clients.enter_async_context(client_from(url, "127.0.40.1")) for _ in range(7)
        ]
        made = []
        for attacker in attackers:
            returning_visitor(attacker)
            made.append([await attacker.post("/api/chat", json=ask()) for _ in range(3)])
        victims = [  # every other place at once, each from an address of its own
            await clients.enter_async_context(client_from(url, f"127.0.41.{n + 1}"))
            for n in range(PLACES - ADDRESS_SHARE)
        ]
        admitted = [await victim.post("/api/chat", json=ask()) for victim in victims]
        owned = zip(attackers + victims, made + [[r] for r in admitted], strict=True)
        for client, sessions in owned:
            await forget(client, sessions)
    assert {r.status_code for sessions in made for r in sessions} == {200}  # older ones gave way
    assert [r.status_code for r in admitted] == [200] * (PLACES - ADDRESS_SHARE)


def stalled_stream(gateway_url: str, address: str, cookie: str) -> socket.socket:
    """From `address`, a streamed request for the emulator's long reply (megabytes), sent
    from a socket with a small receive buffer that reads nothing unless told (the gateway's
    and the chat's sends soon block). The socket, for the caller to close."""
    body = json.dumps(ask(model=LONG_REPLY_MODEL, max_tokens=4096, stream=True)).encode()
    gateway = urlsplit(gateway_url)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.bind((address, 0))
    client.connect((gateway.hostname, gateway.port))
    head = (
        f"POST /api/chat HTTP/1.1\r\nHost: {gateway.netloc}\r\n"
        f"Content-Type: application/json\r\nCookie: {cookie}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    client.sendall(head.encode() + body)
    return client


def status_of(stream: socket.socket) -> int:
    """The response's status, from the first bytes of its head (nothing more is read)."""
    return int(stream.recv(32).split(b" ")[1])


@contextmanager
def stalled_streams(gateway_url: str, address: str, cookie: str, count: int) -> Iterator[list[int]]:
    """`count` stalled streams sent at once; their statuses, while they stay open."""
    with ExitStack() as stack:
        streams = [
            stack.enter_context(stalled_stream(gateway_url, address, cookie)) for _ in range(count)
        ]
        yield [status_of(stream) for stream in streams]


def cookie_of(client: httpx.AsyncClient) -> str:
    return f"{ANON_COOKIE}={client.cookies[ANON_COOKIE]}"


async def test_one_callers_parallel_requests_leave_llm_slots_for_others(abuse_stack):
    url = abuse_stack.gateway_url
    async with client_from(url, "127.0.42.1") as attacker, client_from(url, "127.0.42.2") as victim:
        returning_visitor(attacker)
        # 8 replies at once, as many as a replica's LLM slots, none of them read.
        with stalled_streams(url, "127.0.42.1", cookie_of(attacker), 8) as statuses:
            answered = await victim.post("/api/chat", json=ask())
        await forget(victim, [answered])
    assert sorted(statuses) == [200] * CALLS_PER_USER + [429] * (8 - CALLS_PER_USER)
    assert answered.status_code == 200, answered.text


async def test_a_streaming_client_that_stops_reading_gives_its_slots_back(abuse_stack):
    url = abuse_stack.gateway_url
    async with client_from(url, "127.0.43.1") as client:
        returning_visitor(client)
        with stalled_streams(url, "127.0.43.1", cookie_of(client), CALLS_PER_USER) as statuses:
            held = await client.post("/api/chat", json=ask())
            for _ in range(60):  # once a second: the write timeout is 10 s
                admitted = await client.post("/api/chat", json=ask())
                if admitted.status_code != 429:
                    break
                await asyncio.sleep(1)
        await forget(client, [admitted])
    assert statuses == [200] * CALLS_PER_USER
    assert held.status_code == 429  # the stalled streams hold both of the caller's leases
    assert admitted.status_code == 200, admitted.text  # they were ended, their slots freed


async def test_ids_of_one_address_keep_no_more_than_its_stored_conversations(abuse_stack):
    url = abuse_stack.gateway_url
    async with AsyncExitStack() as clients:
        victim = await clients.enter_async_context(client_from(url, "127.0.44.2"))
        returning_visitor(victim)
        victims = [await victim.post("/api/chat", json=ask())]
        attackers = [  # 4 ids of one address, 7 new conversations each
            await clients.enter_async_context(client_from(url, "127.0.44.1")) for _ in range(4)
        ]
        made = []
        for attacker in attackers:
            returning_visitor(attacker)
            made.append([await attacker.post("/api/chat", json=ask()) for _ in range(7)])
        ids = [r.json()["data"]["session_id"] for sessions in made for r in sessions]
        async with Redis.from_url(abuse_stack.env["REDIS_URL"], decode_responses=True) as redis:
            kept = [await redis.exists(f"chat:session:{session}") for session in ids]
            held = await redis.hmget("budget:conversations:held", [f"chat:{i}" for i in ids])
        first = victims[0].json()["data"]
        more = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": "and then?"},
        ]
        conversation = first["session_id"]
        victims.append(
            await victim.post("/api/chat", json=ask(messages=more, session_id=conversation))
        )
        history = await victim.get(f"/api/chat/sessions/{conversation}")
        for client, sessions in zip(attackers, made, strict=True):
            await forget(client, sessions)
        await forget(victim, victims[:1])
    assert {r.status_code for sessions in made for r in sessions} == {200}
    assert sum(kept) == STORED_PER_ADDRESS
    # The ids share the address's cap: each ends with an equal share, its newest.
    share = STORED_PER_ADDRESS // len(attackers)
    assert kept == ([0] * (7 - share) + [1] * share) * len(attackers)
    # ... and the evicted ones' bytes went back to the conversations budget everyone shares.
    assert [size is None for size in held] == [not k for k in kept]
    assert victims[1].status_code == 200, victims[1].text  # the neighbour's goes on
    assert history.json()["data"]["message_count"] == 4
