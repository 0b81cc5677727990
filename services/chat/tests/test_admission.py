"""The concurrent-user limit: exactly MAX_CONCURRENT_USERS sessions active, atomically."""

import asyncio

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_devstack.testing import identity_from_test_header
from avatar_shared.identity import current_identity

from .conftest import emulated_llm
from .test_chat_routes import ask


def limited(redis_url: str, backend, limit: int, idle_s: int = 300) -> ChatSettings:
    return ChatSettings(
        redis_url=redis_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        max_concurrent_users=limit,
        active_session_idle_s=idle_s,
        chat_rate_per_min=10_000,
        **backend.settings,
    )


async def new_session(chat, **extra):
    return await chat.post("/api/chat", json=ask("hi", tts_enabled=False, **extra))


async def test_past_the_limit_new_sessions_wait_and_active_ones_go_on(
    app_client, redis_url, backend
):
    async with app_client(create_app(limited(redis_url, backend, 3))) as chat:
        admitted = [(await new_session(chat)).json()["data"]["session_id"] for _ in range(3)]
        refused = await new_session(chat)
        refused_stream = await new_session(chat, stream=True)
        again = await new_session(chat, session_id=admitted[0])
        await chat.delete(f"/api/chat/sessions/{admitted[1]}")
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
    async with app_client(create_app(limited(redis_url, backend, 1, idle_s=1))) as chat:
        assert (await new_session(chat)).status_code == 200
        assert (await new_session(chat)).status_code == 503
        await asyncio.sleep(1.2)
        assert (await new_session(chat)).status_code == 200


async def test_a_burst_admits_exactly_the_limit(app_client, redis_url, backend):
    async with app_client(create_app(limited(redis_url, backend, 10))) as chat:
        responses = await asyncio.gather(*(new_session(chat) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(503) == 40


async def test_a_failed_first_turn_gives_its_place_back(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 1).model_copy(
        update={"ollama_base_url": f"http://127.0.0.1:{free_port()}",
                "vllm_base_url": f"http://127.0.0.1:{free_port()}"}
    )  # fmt: skip
    async with app_client(create_app(settings)) as chat:
        first, second = await new_session(chat), await new_session(chat)
    assert [first.status_code, second.status_code] == [503, 503]
    assert [r.json()["error"]["code"] for r in (first, second)] == ["llm_unavailable"] * 2


async def test_without_redis_the_limiter_fails_closed(app_client, backend):
    settings = ChatSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", **backend.settings)
    async with app_client(create_app(settings)) as chat:
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
            async with app_client(create_app(settings)) as chat:
                responses = await asyncio.gather(new_session(chat), new_session(chat))
            assert sorted(r.status_code for r in responses) == expected
            busy = [r for r in responses if r.status_code == 503]
            assert all(r.json()["error"]["code"] == "llm_busy" for r in busy)


async def test_each_user_has_a_request_rate(app_client, redis_url, backend):
    settings = limited(redis_url, backend, 20).model_copy(update={"chat_rate_per_min": 3})
    app = create_app(settings)

    app.dependency_overrides[current_identity] = identity_from_test_header
    alice, bob = {"X-Test-User": "alice"}, {"X-Test-User": "bob"}
    async with app_client(app) as chat:
        invalid = [
            await chat.post("/api/chat", json={"messages": []}, headers=alice) for _ in range(5)
        ]
        allowed = [
            await chat.post("/api/chat", json=ask("hi", tts_enabled=False), headers=alice)
            for _ in range(3)
        ]
        refused = await chat.post("/api/chat", json=ask("hi", tts_enabled=False), headers=alice)
        other = await chat.post("/api/chat", json=ask("hi", tts_enabled=False), headers=bob)
    assert {r.status_code for r in invalid} == {422}  # bad requests do not count
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other.status_code == 200
