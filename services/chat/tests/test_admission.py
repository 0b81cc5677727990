"""Admission: exactly MAX_CONCURRENT_USERS sessions active, atomically, at most
MAX_SESSIONS_PER_USER of them one user's, and a request rate per user counted only for
admitted requests."""

import asyncio
from pathlib import Path

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_shared.identity import current_identity
from tests.helpers import as_user, identity_from_test_header

from .helpers import (
    as_anonymous,
    as_signed_in,
    ask,
    callers_from_test_headers,
    emulated_llm,
)


def limited(redis_url: str, backend, limit: int, idle_s: int = 300, **extra) -> ChatSettings:
    return ChatSettings(
        redis_url=redis_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        max_concurrent_users=limit,
        active_session_idle_s=idle_s,
        chat_rate_per_min=extra.pop("chat_rate_per_min", 10_000),
        **extra,
        **backend.settings,
    )


def with_test_users(settings: ChatSettings):
    """The app, where `as_user(name)` speaks as that user (else all are "anonymous")."""
    app = create_app(settings)
    app.dependency_overrides[current_identity] = identity_from_test_header
    return app


users = iter(f"user-{n}" for n in range(1_000_000))


async def new_session(chat, user: str | None = None, **extra):
    """A new session, by default of a user never seen before."""
    headers = as_user(user or next(users))
    return await chat.post("/api/chat", json=ask("hi", tts_enabled=False, **extra), headers=headers)


async def test_past_the_limit_new_sessions_wait_and_active_ones_go_on(
    app_client, redis_url, backend
):
    async with app_client(with_test_users(limited(redis_url, backend, 3))) as chat:
        owners = ["ann", "ben", "cid"]
        admitted = [(await new_session(chat, who)).json()["data"]["session_id"] for who in owners]
        refused = await new_session(chat)
        refused_stream = await new_session(chat, stream=True)
        again = await new_session(chat, "ann", session_id=admitted[0])
        await chat.delete(f"/api/chat/sessions/{admitted[1]}", headers=as_user("ben"))
        after_release = await new_session(chat)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "too_many_users"
    assert "3 chat sessions" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 300
    assert refused_stream.status_code == 503  # refused before any event
    assert refused_stream.headers["content-type"].startswith("application/json")
    assert again.status_code == 200
    assert after_release.status_code == 200


async def test_idle_sessions_stop_counting(app_client, redis_url, backend):
    async with app_client(with_test_users(limited(redis_url, backend, 1, idle_s=1))) as chat:
        assert (await new_session(chat)).status_code == 200
        assert (await new_session(chat)).status_code == 503
        await asyncio.sleep(1.2)
        assert (await new_session(chat)).status_code == 200


async def test_a_burst_admits_exactly_the_limit(app_client, redis_url, backend):
    async with app_client(with_test_users(limited(redis_url, backend, 10))) as chat:
        responses = await asyncio.gather(*(new_session(chat) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(503) == 40


async def test_a_failed_first_turn_gives_its_place_back(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 1).model_copy(
        update={"ollama_base_url": f"http://127.0.0.1:{free_port()}",
                "vllm_base_url": f"http://127.0.0.1:{free_port()}"}
    )  # fmt: skip
    async with app_client(with_test_users(settings)) as chat:
        first, second = await new_session(chat), await new_session(chat)
    assert [first.status_code, second.status_code] == [503, 503]
    assert [r.json()["error"]["code"] for r in (first, second)] == ["llm_unavailable"] * 2


async def test_without_redis_the_limiter_fails_closed(app_client, backend):
    settings = ChatSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", **backend.settings)
    async with app_client(with_test_users(settings)) as chat:
        response = await asyncio.wait_for(new_session(chat), timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "limiter_unavailable"


async def test_llm_calls_beyond_the_cap_wait_briefly_then_get_busy(app_client, redis_url):
    with emulated_llm("ollama", first_token_latency_s=0.6) as slow:
        for wait_s, expected in ((0.2, [200, 503]), (3.0, [200, 200])):
            settings = ChatSettings(
                redis_url=redis_url,
                tts_url=f"http://127.0.0.1:{free_port()}",
                llm_max_in_flight=1,
                llm_queue_wait_s=wait_s,
                **slow.settings,
            )
            async with app_client(with_test_users(settings)) as chat:
                responses = await asyncio.gather(new_session(chat), new_session(chat))
            assert sorted(r.status_code for r in responses) == expected
            busy = [r for r in responses if r.status_code == 503]
            assert all(r.json()["error"]["code"] == "llm_busy" for r in busy)


async def test_each_user_has_a_request_rate(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 20, chat_rate_per_min=3)
    async with app_client(with_test_users(settings)) as chat:
        invalid = [
            await chat.post("/api/chat", json=body, headers=as_user("alice"))
            for body in ({"messages": []}, {"messages": ask("hi")["messages"]}) * 3
        ]  # no messages; neither persona nor character_id
        allowed = [await new_session(chat, "alice") for _ in range(3)]
        refused = await new_session(chat, "alice")
        other = await new_session(chat, "bob")
    assert {r.status_code for r in invalid} == {422}  # bad requests do not count
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert "3 chat requests a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other.status_code == 200


async def test_one_user_cannot_take_every_place(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 4, max_sessions_per_user=2)
    async with app_client(with_test_users(settings)) as chat:
        hers = [(await new_session(chat, "mallory")).json()["data"] for _ in range(5)]
        others = [await new_session(chat, who) for who in ("alice", "bob")]
        # Her oldest sessions were replaced, not deleted: coming back takes a place again.
        back = await new_session(chat, "mallory", session_id=hers[0]["session_id"])
        full = await new_session(chat, "carol")
    assert all(reply["session_id"] for reply in hers)
    assert [r.status_code for r in others] == [200, 200]
    assert back.status_code == 200
    assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_users"


async def test_a_refused_request_costs_no_rate(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 1, chat_rate_per_min=2)
    async with app_client(with_test_users(settings)) as chat:
        first = await new_session(chat, "alice")
        refused = [await new_session(chat, "bob") for _ in range(4)]
        await chat.delete(
            f"/api/chat/sessions/{first.json()['data']['session_id']}", headers=as_user("alice")
        )
        admitted = [await new_session(chat, "bob") for _ in range(2)]
    assert first.status_code == 200
    assert {r.json()["error"]["code"] for r in refused} == {"too_many_users"}
    assert admitted[0].status_code == 200  # the four refusals did not use bob's budget
    assert admitted[1].status_code == 503  # his one session holds the single place


async def test_a_limited_request_asks_nothing_of_the_other_services(app_client, redis_url, backend):
    # Nobody listens at characters_url: a request that reaches the fetch gets 503.
    settings = limited(redis_url, backend, 20, chat_rate_per_min=2).model_copy(
        update={"characters_url": f"http://127.0.0.1:{free_port()}"}
    )
    body = {**ask("hi", tts_enabled=False), "persona": None, "character_id": "hermione"}
    async with app_client(with_test_users(settings)) as chat:
        responses = [
            await chat.post("/api/chat", json=body, headers=as_user("a")) for _ in range(4)
        ]
    codes = [r.json()["error"]["code"] for r in responses]
    assert codes == ["characters_unavailable"] * 2 + ["rate_limited"] * 2


async def test_only_offered_models_are_accepted(app_client, redis_url, backend_name):
    server_has = ["gemma-3-27b-it", "dolphin-2.9-8b", "huge-model-405b"]
    with emulated_llm(backend_name, models=server_has) as backend:
        settings = limited(redis_url, backend, 20, offered_models="dolphin-2.9-8b")
        async with app_client(with_test_users(settings)) as chat:
            listed = (await chat.get("/api/chat/models")).json()["data"]["models"]
            offered = await new_session(chat, model="dolphin-2.9-8b")
            default = await new_session(chat)
            backend.recorder.clear()
            refused = [await new_session(chat, model=m) for m in ("huge-model-405b", "made-up")]
    assert [m["id"] for m in listed] == ["gemma-3-27b-it", "dolphin-2.9-8b"]
    assert offered.status_code == 200 and default.status_code == 200
    assert [r.status_code for r in refused] == [404, 404]
    assert {r.json()["error"]["code"] for r in refused} == {"model_not_found"}
    assert backend.recorder.prompts == []  # neither reached the LLM server


async def test_a_users_share_holds_while_their_sessions_stay_in_use(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 2, idle_s=2, max_sessions_per_user=1)
    async with app_client(with_test_users(settings)) as chat:
        first = (await new_session(chat, "alice")).json()["data"]["session_id"]
        for _ in range(3):  # in use for longer than the idle time, never idle that long
            await asyncio.sleep(0.9)
            assert (await new_session(chat, "alice", session_id=first)).status_code == 200
        second = await new_session(chat, "alice")  # her second: it takes her first's place
        other = await new_session(chat, "bob")
    assert second.status_code == 200
    assert other.status_code == 200  # alice holds one place of the two, not both


def with_test_callers(settings: ChatSettings):
    """The app, where `as_anonymous(name, address)` speaks as an anonymous id of that address
    and `as_user(name)` as a signed-in user."""
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    return app


async def test_many_ids_of_one_address_hold_at_most_its_share_of_places(
    app_client, redis, redis_url, backend
):
    # Active places only: the address's stored conversations (whose eviction frees a place
    # too) are not what is bounded here.
    settings = limited(
        redis_url, backend, 10, max_sessions_per_address=4, max_stored_sessions_per_address=100
    )
    async with app_client(with_test_callers(settings)) as chat:
        attacker = [  # 7 ids x 3 sessions, as in the audit
            await chat.post(
                "/api/chat",
                json=ask("hi", tts_enabled=False),
                headers=as_anonymous(f"anon-attacker-{n // 3}", "10.0.0.66"),
            )
            for n in range(21)
        ]
        victims = [
            await chat.post(
                "/api/chat",
                json=ask("hi", tts_enabled=False),
                headers=as_anonymous(f"anon-victim-{n}", f"10.0.1.{n}"),
            )
            for n in range(6)
        ]
        full = await new_session(chat)
    assert {r.status_code for r in attacker} == {200}  # each new session took an older place
    assert await redis.zcard("chat:active-of:addr:10.0.0.66") == 4
    assert [r.status_code for r in victims] == [200] * 6  # the other 6 places are theirs
    assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_users"


async def test_signed_in_users_are_not_counted_by_address(app_client, redis, redis_url, backend):
    settings = limited(redis_url, backend, 10, max_sessions_per_address=2)
    async with app_client(with_test_callers(settings)) as chat:  # an office behind one NAT
        office = [
            await chat.post(
                "/api/chat",
                json=ask("hi", tts_enabled=False),
                headers=as_signed_in(f"colleague-{n}", "10.0.0.7"),
            )
            for n in range(6)
        ]
    assert [r.status_code for r in office] == [200] * 6
    assert await redis.zcard("chat:active") == 6  # none took another's place


async def test_retry_after_says_when_the_least_recently_used_place_frees(
    app_client, redis_url, backend
):
    async with app_client(with_test_users(limited(redis_url, backend, 1, idle_s=300))) as chat:
        assert (await new_session(chat)).status_code == 200
        refused = await new_session(chat)
    # The one session was used a moment ago: it goes idle in (just under) 300 s.
    assert 295 <= int(refused.headers["Retry-After"]) <= 300
    assert "unless it is used again" in refused.json()["error"]["message"]


async def test_a_full_conversations_budget_refuses_new_turns_and_keeps_the_rest(
    app_client, redis_url, backend
):
    # REDIS_MAXMEMORY 400 KB: conversations may fill a quarter of it, about 100 KB.
    settings = limited(redis_url, backend, 100, redis_maxmemory="400kb")
    big = ask("x" * 8000, tts_enabled=False)  # about 25 KB stored a turn
    async with app_client(with_test_users(settings)) as chat:
        stored = []
        for _ in range(10):
            response = await chat.post("/api/chat", json=big, headers=as_user("alice"))
            if response.status_code != 200:
                break
            stored.append(response.json()["data"]["session_id"])
        asked = len(backend.recorder.prompts)
        refused = await chat.post("/api/chat", json=ask("hi"), headers=as_user("bob"))
        untouched = backend.recorder.prompts[asked:]
        read = await chat.get(f"/api/chat/sessions/{stored[0]}", headers=as_user("alice"))
        await chat.delete(f"/api/chat/sessions/{stored[0]}", headers=as_user("alice"))
        after_delete = await chat.post("/api/chat", json=ask("hi"), headers=as_user("bob"))
    assert 3 <= len(stored) <= 5
    assert response.status_code == 503 and response.json()["error"]["code"] == "storage_full"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_full"
    assert untouched == []  # refused before the LLM was asked
    assert read.status_code == 200 and len(read.json()["data"]["messages"]) == 2
    assert after_delete.status_code == 200


async def test_each_anonymous_id_of_an_address_has_its_own_request_rate(app_client, redis_url):
    """CHAT_RATE_PER_MIN is counted per anonymous id (only a caller without one by address),
    and the configuration reference says so."""
    with emulated_llm("ollama") as backend:
        app = create_app(limited(redis_url, backend, 20, chat_rate_per_min=2))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as chat:

            async def turn(name: str) -> int:
                headers = as_anonymous(name, "10.9.9.9")
                body = ask("hi", tts_enabled=False)
                return (await chat.post("/api/chat", json=body, headers=headers)).status_code

            statuses = [await turn(f"anon-{n % 3}") for n in range(6)]
            third = await turn("anon-0")
    assert statuses == [200] * 6 and third == 429  # each id: its own 2 a minute
    reference = Path(__file__).parents[3] / "docs" / "configuration.md"
    line = next(x for x in reference.read_text().splitlines() if "`CHAT_RATE_PER_MIN`" in x)
    assert "anonymous id" in line and "anonymous address" not in line, line
