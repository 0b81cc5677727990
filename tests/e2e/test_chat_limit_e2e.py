"""The concurrent-user limit through the real gateway and two chat replicas sharing one Redis:
a burst of new sessions admits exactly MAX_CONCURRENT_USERS across both replicas and refuses
the rest with 503 too_many_users and Retry-After; admitted sessions keep working; a place
freed by DELETE or by idle expiry goes to a new session."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from avatar_devstack.environment import ONE_ADDRESS
from avatar_devstack.stack import Stack
from tests.helpers import own_stack

LIMIT = 20
BURST = 200
IDLE_S = 5  # long enough for the whole burst to be decided on two cores, short to wait out
NEW = {"messages": [{"role": "user", "content": "hi"}], "persona": "p", "tts_enabled": False}


@pytest.fixture(scope="module")
def limited() -> Iterator[Stack]:
    env = {
        "MAX_CONCURRENT_USERS": str(LIMIT),
        "ACTIVE_SESSION_IDLE_S": str(IDLE_S),
        # One client address sends the whole burst: its own rate and shares are no limit.
        "CHAT_RATE_PER_MIN": "100000",
        "MAX_SESSIONS_PER_USER": "100000",
        "LLM_CALLS_PER_USER": "100000",
        **ONE_ADDRESS,  # the whole burst comes from one address, all of it under way at once
        "LLM_QUEUE_WAIT_S": "60",  # admitted requests may queue for the LLM
    }
    with own_stack("limit", env, replicas={"chat": 2}) as stack:
        yield stack


@pytest.fixture
async def client(limited: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway, with no session active beforehand."""
    redis = Redis.from_url(limited.env["REDIS_URL"])
    await redis.delete("chat:active", *await redis.keys("chat:active-of:*"))
    await redis.aclose()
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(
        base_url=limited.gateway_url, trust_env=False, limits=limits, timeout=120
    ) as client:
        yield client


def chat_statuses(log: Path) -> dict[str, int]:
    """Request id -> status of each POST /api/chat in one replica's access log."""
    statuses = {}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not one of our JSON lines
        if entry.get("message") == "request" and entry.get("path") == "/api/chat":
            statuses[entry["request_id"]] = entry["status"]
    return statuses


async def served_by_replica(stack: Stack, request_ids: set[str]) -> dict[str, dict[str, int]]:
    """Which replica answered which request: each writes its access line just after answering."""
    log_dir = stack.supervisor.log_dir
    assert log_dir is not None
    deadline = time.monotonic() + 5
    while True:
        served = {name: chat_statuses(log_dir / f"{name}.log") for name in ("chat", "chat-2")}
        seen = {rid for statuses in served.values() for rid in statuses}
        if request_ids <= seen or time.monotonic() > deadline:
            return {
                name: {rid: s for rid, s in statuses.items() if rid in request_ids}
                for name, statuses in served.items()
            }
        await asyncio.sleep(0.1)


async def new_session(client: httpx.AsyncClient, request_id: str | None = None):
    headers = {"X-Request-ID": request_id} if request_id else {}
    return await client.post("/api/chat", json=NEW, headers=headers)


def owner_of(response: httpx.Response) -> dict[str, str]:
    """Requests sent together without a cookie are each a visitor of their own: a session is
    its owner's, the one holding the anonymous cookie that its first response set."""
    return {"Cookie": f"anon_id={response.cookies['anon_id']}"}


def assert_too_many_users(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "too_many_users"
    # Until the oldest session expires, by Redis's one clock: never more than IDLE_S.
    assert 1 <= int(response.headers["Retry-After"]) <= IDLE_S


async def test_a_burst_admits_exactly_the_limit_across_two_replicas(limited, client):
    ids = [f"burst-{i}" for i in range(BURST)]
    started = time.monotonic()
    responses = await asyncio.gather(*(new_session(client, rid) for rid in ids))
    elapsed = time.monotonic() - started
    # Past IDLE_S the first sessions could expire mid-burst and rightly free their places.
    assert elapsed < IDLE_S, f"the burst took {elapsed:.1f}s: raise IDLE_S"

    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(admitted) == LIMIT
    assert len(refused) == BURST - LIMIT
    for response in refused:
        assert_too_many_users(response)
    assert len({r.json()["data"]["session_id"] for r in admitted}) == LIMIT

    # Both replicas answered part of the burst, and their admissions add up to the limit.
    served = await served_by_replica(limited, set(ids))
    assert all(served.values()), {name: len(statuses) for name, statuses in served.items()}
    assert sum(len(statuses) for statuses in served.values()) == BURST
    assert sum(list(s.values()).count(200) for s in served.values()) == LIMIT

    # An admitted session keeps working; a new one is still refused.
    session_id = admitted[0].json()["data"]["session_id"]
    again = await client.post(
        "/api/chat", json={**NEW, "session_id": session_id}, headers=owner_of(admitted[0])
    )
    assert again.status_code == 200, again.text
    assert again.json()["data"]["session_id"] == session_id
    assert_too_many_users(await new_session(client))


async def test_a_released_or_idle_place_goes_to_a_new_session(client):
    responses = await asyncio.gather(*(new_session(client) for _ in range(LIMIT)))
    assert [r.status_code for r in responses] == [200] * LIMIT
    assert_too_many_users(await new_session(client))

    released = responses[0].json()["data"]["session_id"]
    deleted = await client.delete(f"/api/chat/sessions/{released}", headers=owner_of(responses[0]))
    assert deleted.status_code == 200, deleted.text
    replacement = await new_session(client)
    assert replacement.status_code == 200, replacement.text
    assert_too_many_users(await new_session(client))

    await asyncio.sleep(IDLE_S + 1)  # nothing keeps any session alive
    after_idle = await asyncio.gather(*(new_session(client) for _ in range(LIMIT)))
    assert [r.status_code for r in after_idle] == [200] * LIMIT
    assert_too_many_users(await new_session(client))
