"""Conversations kept on the server (issue 26), through the chat app against a real Redis and
the LLM emulators: a turn with `session_id` + `message`, regenerate and swipes, edit, delete,
continue, branch, interrupted replies, 409 while a reply is generated, the library, and
export and import. Conversations here are mostly played with a `persona` alone; the real
characters service runs beside chat (a start asks it for the caller's default persona), and
some tests play its characters and personas: the greeting and sign-in parts are in
tests/e2e/test_conversations_e2e.py."""

import asyncio
import json
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_chat.store import SessionStore
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.adoption import ADOPT_PATH, Adoption, signature_headers
from avatar_shared.identity import AnonymousIds, current_identity

from .helpers import (
    PERSONA,
    as_anonymous,
    as_signed_in,
    callers_from_test_headers,
    emulated_llm,
    no_turn_in_flight,
)

ST_CHAT = Path(__file__).parent / "data" / "sillytavern_chat.jsonl"
ALICE = as_signed_in("alice", "10.0.0.1")
BOB = as_signed_in("bob", "10.0.0.2")


def settings_for(
    redis_url: str, backend_settings: dict, characters_url: str, **extra: object
) -> ChatSettings:
    """Chat's settings, speaking to the characters service at `characters_url` (a start asks
    it for the caller's default persona)."""
    nobody = f"http://127.0.0.1:{free_port()}"
    return ChatSettings(
        **{"redis_url": redis_url, "characters_url": characters_url, "tts_url": nobody, **extra},
        chat_rate_per_min=10_000,
        **backend_settings,
    )


@asynccontextmanager
async def chat_and_characters(app_client, redis_url, backend, characters_url, **extra):
    """Chat speaking to the real characters service, a client of each, and chat's settings."""
    settings = settings_for(redis_url, backend.settings, characters_url, **extra)
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with (
        app_client(app) as client,
        httpx.AsyncClient(base_url=characters_url, trust_env=False) as characters_api,
    ):
        yield client, characters_api, settings


@pytest.fixture
async def client(app_client, redis_url, backend, characters_url):
    """Chat, asking the characters service for the caller's default persona at each start."""
    app = create_app(settings_for(redis_url, backend.settings, characters_url))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        yield client


@pytest.fixture
async def client_without_characters(app_client, redis_url, backend):
    nobody = f"http://127.0.0.1:{free_port()}"
    app = create_app(settings_for(redis_url, backend.settings, nobody))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        yield client


async def start(client: httpx.AsyncClient, who=ALICE, **extra) -> dict:
    response = await client.post(
        "/api/chat/sessions", json={"persona": PERSONA, **extra}, headers=who
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def say(client, session_id: str, text: str, who=ALICE, **extra) -> dict:
    body = {"session_id": session_id, "message": text, "tts_enabled": False, **extra}
    response = await client.post("/api/chat", json=body, headers=who)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def messages_of(client, session_id: str, who=ALICE) -> list[dict]:
    response = await client.get(f"/api/chat/sessions/{session_id}", headers=who)
    assert response.status_code == 200, response.text
    return response.json()["data"]["messages"]


def seen(backend) -> list[dict]:
    """The conversation the model last received, without the system message."""
    return [m for m in backend.recorder.last.messages_received if m["role"] != "system"]


async def test_a_turn_needs_only_the_new_message(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "안녕! 나는 민수야.")
    second = await say(client, session, "내 이름 기억해?")
    assert [m["content"] for m in seen(backend)] == [
        "안녕! 나는 민수야.",
        first["content"],
        "내 이름 기억해?",
    ]
    stored = await messages_of(client, session)
    assert [m["id"] for m in stored] == [
        first["user_message_id"],
        first["message_id"],
        second["user_message_id"],
        second["message_id"],
    ]
    assert stored[-1]["content"] == second["content"] and stored[-1]["swipes"] == [
        second["content"]
    ]


async def test_messages_and_message_together_or_neither_are_refused(client, backend):
    session = (await start(client))["session_id"]
    both = {"session_id": session, "message": "hi", "messages": [{"role": "user", "content": "x"}]}
    neither = {"session_id": session, "persona": PERSONA}
    setup_too = {"session_id": session, "message": "hi", "persona": "someone else"}
    for body in (both, neither, setup_too):
        response = await client.post("/api/chat", json=body, headers=ALICE)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
    assert await messages_of(client, session) == []  # nothing was added
    assert backend.recorder.prompts == []


@pytest.mark.parametrize("body", [{}, {"persona": ""}, {"title": "무제"}])
async def test_a_conversation_without_a_character_is_refused_saying_what_to_give(client, body):
    response = await client.post("/api/chat/sessions", json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    assert "give a persona or a character_id" in response.json()["error"]["message"]
    listed = await client.get("/api/chat/sessions", headers=ALICE)
    assert listed.json()["data"]["conversations"] == []  # nothing was started


async def test_another_users_conversation_is_not_found(client, backend):
    session = (await start(client))["session_id"]
    await say(client, session, "비밀 이야기")
    [message] = [m for m in await messages_of(client, session) if m["role"] == "user"]
    attempts = [
        ("POST", "/api/chat", {"session_id": session, "message": "hi"}),
        ("GET", f"/api/chat/sessions/{session}", None),
        ("POST", f"/api/chat/sessions/{session}/regenerate", {}),
        ("POST", f"/api/chat/sessions/{session}/continue", {}),
        ("PATCH", f"/api/chat/sessions/{session}/messages/{message['id']}", {"content": "x"}),
        ("DELETE", f"/api/chat/sessions/{session}/messages/{message['id']}", None),
        ("POST", f"/api/chat/sessions/{session}/branch", {"message_id": message["id"]}),
        ("GET", f"/api/chat/sessions/{session}/export", None),
        ("PATCH", f"/api/chat/sessions/{session}", {"title": "mine now"}),
        ("POST", f"/api/chat/sessions/{session}/release", None),
        ("DELETE", f"/api/chat/sessions/{session}", None),
    ]
    calls = len(backend.recorder.prompts)
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=BOB)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "session_not_found"
    assert len(backend.recorder.prompts) == calls  # no LLM work for a stranger
    assert (await messages_of(client, session))[0]["content"] == "비밀 이야기"


async def test_regenerate_keeps_the_alternates_and_a_swipe_chooses(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "이야기 하나 해줘")
    again = await client.post(
        f"/api/chat/sessions/{session}/regenerate",
        json={"temperature": 1.3, "tts_enabled": False},
        headers=ALICE,
    )
    assert again.status_code == 200, again.text
    second = again.json()["data"]
    # The model saw the conversation without the reply being replaced.
    assert [m["content"] for m in seen(backend)] == ["이야기 하나 해줘"]
    assert second["message_id"] == first["message_id"] and second["swipe_id"] == 1
    assert second["content"] != first["content"]  # another temperature, another reply
    reply = (await messages_of(client, session))[-1]
    assert reply["swipes"] == [first["content"], second["content"]]
    assert reply["content"] == second["content"] and reply["swipe_id"] == 1

    chosen = await client.put(
        f"/api/chat/sessions/{session}/messages/{reply['id']}/swipe",
        json={"index": 0},
        headers=ALICE,
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["data"]["content"] == first["content"]
    await say(client, session, "그 다음은?")
    assert seen(backend)[1]["content"] == first["content"]  # the chosen one is what the model sees
    out_of_range = await client.put(
        f"/api/chat/sessions/{session}/messages/{reply['id']}/swipe",
        json={"index": 2},
        headers=ALICE,
    )
    assert out_of_range.status_code == 422
    assert "2 alternates" in out_of_range.json()["error"]["message"]


@pytest.mark.parametrize("chosen", [None, 0], ids=["the newest shown", "the first chosen"])
async def test_past_max_swipes_the_oldest_alternate_goes_never_the_chosen_one(
    app_client, redis_url, characters_url, backend, chosen
):
    app = create_app(settings_for(redis_url, backend.settings, characters_url, max_swipes=2))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        session = (await start(client))["session_id"]
        first = await say(client, session, "hi")
        replies = [first["content"]]
        for temperature in (0.9, 1.1):
            if chosen is not None and temperature == 1.1:  # the user swipes back first
                path = f"/api/chat/sessions/{session}/messages/{first['message_id']}/swipe"
                swiped = await client.put(path, json={"index": chosen}, headers=ALICE)
                assert swiped.json()["data"]["content"] == replies[chosen]
            response = await client.post(
                f"/api/chat/sessions/{session}/regenerate",
                json={"temperature": temperature, "tts_enabled": False},
                headers=ALICE,
            )
            replies.append(response.json()["data"]["content"])
        reply = (await messages_of(client, session))[-1]
    kept = [replies[1], replies[2]] if chosen is None else [replies[chosen], replies[2]]
    assert reply["swipes"] == kept and reply["swipe_id"] == 1


async def test_an_edit_is_what_the_model_sees_next(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "내 이름은 민수야")
    edited = await client.patch(
        f"/api/chat/sessions/{session}/messages/{first['user_message_id']}",
        json={"content": "내 이름은 지훈이야"},
        headers=ALICE,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["data"]["content"] == "내 이름은 지훈이야"
    await say(client, session, "내 이름이 뭐지?")
    assert seen(backend)[0]["content"] == "내 이름은 지훈이야"
    missing = await client.patch(
        f"/api/chat/sessions/{session}/messages/nosuchmessage",
        json={"content": "x"},
        headers=ALICE,
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "message_not_found"


async def test_a_deleted_message_is_gone_from_history_and_prompt(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "첫 번째")
    await say(client, session, "두 번째")
    deleted = await client.delete(
        f"/api/chat/sessions/{session}/messages/{first['message_id']}", headers=ALICE
    )
    assert deleted.status_code == 200, deleted.text
    stored = await messages_of(client, session)
    assert first["message_id"] not in [m["id"] for m in stored] and len(stored) == 3
    history = (await client.get(f"/api/chat/sessions/{session}", headers=ALICE)).json()["data"]
    assert history["message_count"] == 3
    await say(client, session, "세 번째")
    assert first["content"] not in [m["content"] for m in seen(backend)]


async def test_continue_extends_the_last_reply(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "길게 이야기해줘", max_tokens=5)
    response = await client.post(
        f"/api/chat/sessions/{session}/continue",
        json={"max_tokens": 5, "tts_enabled": False},
        headers=ALICE,
    )
    assert response.status_code == 200, response.text
    more = response.json()["data"]
    # The request ends with the reply being continued.
    last = backend.recorder.last
    assert last.messages_received[-1] == {"role": "assistant", "content": first["content"]}
    if backend.name == "vllm":
        assert last.options["continue_final_message"] is True
        assert last.options["add_generation_prompt"] is False
    reply = (await messages_of(client, session))[-1]
    assert reply["id"] == first["message_id"] and len(reply["swipes"]) == 1
    assert reply["content"] == first["content"] + more["content"]


async def test_nothing_to_regenerate_or_continue(client, backend):
    session = (await start(client))["session_id"]
    for action in ("regenerate", "continue"):
        response = await client.post(
            f"/api/chat/sessions/{session}/{action}", json={}, headers=ALICE
        )
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "nothing_to_steer"
    assert backend.recorder.prompts == []


async def test_a_branch_holds_the_prefix_only(client, backend):
    session = (await start(client))["session_id"]
    first = await say(client, session, "갈림길 전")
    await say(client, session, "원래 길")
    response = await client.post(
        f"/api/chat/sessions/{session}/branch",
        json={"message_id": first["message_id"]},
        headers=ALICE,
    )
    assert response.status_code == 201, response.text
    branch = response.json()["data"]
    assert branch["session_id"] != session
    assert [m["content"] for m in branch["messages"]] == ["갈림길 전", first["content"]]
    await say(client, branch["session_id"], "새 길")
    assert "원래 길" not in [m["content"] for m in seen(backend)]
    assert len(await messages_of(client, session)) == 4  # the original is untouched


async def test_a_turn_waits_a_moment_for_its_conversation_to_be_let_go(client, redis):
    """Stop, then send at once: the stopped reply is still being saved for a few ms, holding
    the conversation (here a hold that lasts 0.3 s). The next turn waits for it rather than
    answer 409; held for longer than it waits, it is 409 with Retry-After."""
    session = (await start(client))["session_id"]
    busy = f"chat:session:{session}:busy"
    await redis.set(busy, "a-stopped-turn-being-saved", px=300)
    assert (await say(client, session, "바로 다음"))["content"]
    await redis.set(busy, "a-long-turn", ex=60)
    body = {"session_id": session, "message": "또", "tts_enabled": False}
    refused = await client.post("/api/chat", json=body, headers=ALICE)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conversation_busy"
    assert refused.headers["retry-after"] == "1"


async def test_a_change_while_a_reply_is_generated_is_409(
    app_client, redis_url, characters_url, backend_name
):
    with emulated_llm(backend_name, tokens_per_second=10) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as client:
            session = (await start(client))["session_id"]
            conversation = f"/api/chat/sessions/{session}"
            # 4 s at 10 tokens/s: it outlasts the changes below, of which a turn waits 1 s.
            body = {"session_id": session, "message": "천천히", "tts_enabled": False}
            body["max_tokens"] = 40
            turn = asyncio.create_task(client.post("/api/chat", json=body, headers=ALICE))
            while not slow.recorder.prompts:  # the turn has reached the LLM  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            for method, path, data in (
                ("POST", "/api/chat", {"session_id": session, "message": "또"}),
                ("POST", f"/api/chat/sessions/{session}/regenerate", {}),
                ("DELETE", f"/api/chat/sessions/{session}", None),
                # The turn was planned learning: read_only must not begin in its middle.
                ("PATCH", conversation, {"memory": "read_only", "title": "새"}),
            ):
                response = await client.request(method, path, json=data, headers=ALICE)
                assert response.status_code == 409, (path, response.text)
                assert response.json()["error"]["code"] == "conversation_busy"
                assert response.headers["retry-after"] == "1"
            for same_mode in ({"title": "이름만"}, {"memory": "on"}):  # no new mode: answered
                response = await client.patch(conversation, json=same_mode, headers=ALICE)
                assert response.status_code == 200, response.text
            assert (await turn).status_code == 200
            after = (await client.patch(conversation, json={"pinned": True}, headers=ALICE)).json()
            assert (after["data"]["memory"], after["data"]["title"]) == ("on", "이름만")
            assert len(await messages_of(client, session)) == 2  # the one turn, recorded
            assert (await say(client, session, "이제 돼?", max_tokens=5))["content"]  # free again


async def test_a_clients_record_deleted_while_its_turn_runs_stays_deleted(
    app_client, redis_url, characters_url, backend_name
):
    with emulated_llm(backend_name, tokens_per_second=10) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as client:
            said = [{"role": "user", "content": "처음"}]
            body = {"persona": PERSONA, "tts_enabled": False, "messages": said, "max_tokens": 2}
            first = (await client.post("/api/chat", json=body, headers=ALICE)).json()["data"]
            session = first["session_id"]
            said = [*said, {"role": "assistant", "content": first["content"]}]
            said.append({"role": "user", "content": "다음"})
            again = {**body, "session_id": session, "messages": said, "max_tokens": 20}
            turn = asyncio.create_task(client.post("/api/chat", json=again, headers=ALICE))
            while len(slow.recorder.prompts) < 2:  # the turn has reached the LLM  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            deleted = await client.delete(f"/api/chat/sessions/{session}", headers=ALICE)
            assert deleted.status_code == 200, deleted.text  # a client's turn does not hold it
            answered = await turn
            assert answered.status_code == 404, answered.text  # the deletion stands
            assert answered.json()["error"]["code"] == "session_not_found"
            after = await client.get(f"/api/chat/sessions/{session}", headers=ALICE)
            assert after.status_code == 404, after.text


async def test_a_stopped_stream_is_recorded_as_interrupted(redis_url, characters_url, backend_name):
    with emulated_llm(backend_name, tokens_per_second=20) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        # A real server: a client that leaves is a closed connection.
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
                await stopped_stream_is_recorded(client)


async def stopped_stream_is_recorded(client: httpx.AsyncClient) -> None:
    session = (await start(client))["session_id"]
    body = {"session_id": session, "message": "길게 말해줘", "stream": True}
    async with client.stream("POST", "/api/chat", json=body, headers=ALICE) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("event: delta"):
                shown = json.loads((await anext(lines)).removeprefix("data: "))
                break
    for _ in range(100):  # the record happens as the stream is torn down
        stored = await messages_of(client, session)
        if len(stored) == 2:
            break
        await asyncio.sleep(0.05)
    user, reply = stored
    assert user["content"] == "길게 말해줘"
    assert reply["interrupted"] is True and reply["content"].startswith(shown["content"])
    # Free again: a continue finishes it, and it is no longer cut short.
    response = await client.post(
        f"/api/chat/sessions/{session}/continue",
        json={"max_tokens": 3, "tts_enabled": False},
        headers=ALICE,
    )
    assert response.status_code == 200, response.text
    assert (await messages_of(client, session))[-1]["interrupted"] is False


async def test_a_stopped_stream_keeps_the_sessions_last_prompt_count(
    redis_url, characters_url, backend_name
):
    """The LLM server reports no counts for a reply it was stopped in: the session keeps the
    last count it has, not 0 (the prompt was sent)."""
    with emulated_llm(backend_name, tokens_per_second=20) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
                session = (await start(client))["session_id"]
                await say(client, session, "안녕", max_tokens=3)
                path = f"/api/chat/sessions/{session}"
                before = (await client.get(path, headers=ALICE)).json()["data"]
                body = {"session_id": session, "message": "길게 말해줘", "stream": True}
                async with client.stream("POST", "/api/chat", json=body, headers=ALICE) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event: delta"):
                            break  # the user stops it
                for _ in range(100):  # the record happens as the stream is torn down
                    after = (await client.get(path, headers=ALICE)).json()["data"]
                    if after["messages"][-1]["interrupted"]:
                        break
                    await asyncio.sleep(0.05)
    assert after["messages"][-1]["interrupted"] is True
    assert before["last_prompt_tokens"] > 0
    assert after["last_prompt_tokens"] == before["last_prompt_tokens"]
    assert after["usage"] == before["usage"]  # the stopped reply's tokens were never counted


class HearsDisconnects:
    """ASGI middleware: sets `gone` when the server hears that a `POST /api/chat` client has
    left, in the step in which Starlette cancels that client's stream."""

    def __init__(self, app: ASGIApp, gone: threading.Event) -> None:
        self.app, self.gone = app, gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def heard() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
            return message

        chat = scope["type"] == "http" and scope["path"] == "/api/chat"
        await self.app(scope, heard if chat else receive, send)


@pytest.mark.parametrize("saved", [True, False])
async def test_a_client_leaving_while_its_whole_reply_is_saved_loses_nothing(
    redis_url, characters_url, redis, monkeypatch, saved
):
    """The user closes the stream as the finished reply is being saved (made to last until
    the server has heard them leave): the reply is kept whole, and the conversation and the
    user's place among their turns in flight are free at once (not held for the turn's
    lease, minutes, answering 409 conversation_busy). A save that fails then (Redis lost
    for a moment) still frees them."""
    recording, gone = threading.Event(), threading.Event()
    record_turn = SessionStore.record_turn

    async def recorded_once_the_client_left(self, *args, **kwargs):
        recording.set()
        await asyncio.to_thread(gone.wait, 10)  # an await at which a cancellation lands
        if not saved:
            raise RedisConnectionError("lost for a moment")
        return await record_turn(self, *args, **kwargs)

    monkeypatch.setattr(SessionStore, "record_turn", recorded_once_the_client_left)
    with emulated_llm("ollama") as backend:
        app = create_app(settings_for(redis_url, backend.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        app.add_middleware(HearsDisconnects, gone=gone)
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
                session = (await start(client))["session_id"]
                body = {"session_id": session, "message": "짧게", "stream": True,
                        "tts_enabled": False, "max_tokens": 3}  # fmt: skip
                async with client.stream("POST", "/api/chat", json=body, headers=ALICE):
                    assert await asyncio.to_thread(recording.wait, 10)
                assert await asyncio.to_thread(gone.wait, 10)  # the user has left
                await no_turn_in_flight(redis)
                stored = await messages_of(client, session)
                if saved:
                    said, reply = stored
                    assert said["content"] == "짧게"
                    assert reply["interrupted"] is False and reply["content"]
                else:
                    assert stored == []
                monkeypatch.setattr(SessionStore, "record_turn", record_turn)
                assert (await say(client, session, "다음", max_tokens=3))["content"]


async def test_the_library_lists_pages_filters_and_pins(client, backend):
    made = [(await start(client, title=f"chat {n}"))["session_id"] for n in range(5)]
    await say(client, made[1], "다시 왔어")  # the most recent activity
    listed = await client.get("/api/chat/sessions?limit=2", headers=ALICE)
    page = listed.json()["data"]
    assert [c["session_id"] for c in page["conversations"]] == [made[1], made[4]]
    assert page["conversations"][0]["preview"] and page["conversations"][0]["message_count"] == 2
    rest = await client.get(
        f"/api/chat/sessions?limit=10&cursor={page['next_cursor']}", headers=ALICE
    )
    expected = [made[3], made[2], made[0]]
    assert [c["session_id"] for c in rest.json()["data"]["conversations"]] == expected
    pinned = await client.patch(
        f"/api/chat/sessions/{made[0]}", json={"pinned": True, "title": "즐겨찾기"}, headers=ALICE
    )
    assert pinned.status_code == 200 and pinned.json()["data"]["title"] == "즐겨찾기"
    first = (await client.get("/api/chat/sessions?limit=1", headers=ALICE)).json()["data"]
    assert first["conversations"][0]["session_id"] == made[0]
    assert (await client.get("/api/chat/sessions", headers=BOB)).json()["data"][
        "conversations"
    ] == []
    deleted = await client.delete(f"/api/chat/sessions/{made[2]}", headers=ALICE)
    assert deleted.status_code == 200
    everything = (await client.get("/api/chat/sessions?limit=100", headers=ALICE)).json()["data"]
    assert made[2] not in [c["session_id"] for c in everything["conversations"]]


async def test_titles_come_from_the_first_user_message(client, backend):
    session = (await start(client))["session_id"]
    await say(client, session, "오늘은 " + "아주 " * 30 + "긴 하루였어")
    [listed] = (await client.get("/api/chat/sessions", headers=ALICE)).json()["data"][
        "conversations"
    ]
    assert listed["title"].startswith("오늘은 아주") and len(listed["title"]) <= 60


async def test_release_frees_the_place_and_keeps_the_chat(client, backend, redis):
    session = (await start(client))["session_id"]
    await say(client, session, "안녕")
    assert await redis.zscore("chat:active", session) is not None
    released = await client.post(f"/api/chat/sessions/{session}/release", headers=ALICE)
    assert released.status_code == 200, released.text
    assert await redis.zscore("chat:active", session) is None
    assert len(await messages_of(client, session)) == 2


async def test_signed_in_conversations_are_kept_anonymous_ones_expire(client, backend, redis):
    kept = (await start(client))["session_id"]
    anonymous = (await start(client, who=as_anonymous("anon-1", "10.0.0.9")))["session_id"]
    await say(client, kept, "hi")
    assert await redis.ttl(f"chat:session:{kept}") == -1
    assert await redis.ttl(f"chat:session:{kept}:messages") == -1
    assert await redis.ttl(f"chat:session:{anonymous}") > 0
    # The list of what is kept is kept too; an anonymous caller's expires with its sessions.
    assert await redis.ttl("chat:library:alice") == -1
    assert await redis.ttl("chat:library:anon-1") > 0


async def test_the_signed_in_quota_refuses_the_next_conversation(
    app_client, redis_url, characters_url, backend
):
    app = create_app(
        settings_for(redis_url, backend.settings, characters_url, max_conversations_per_user=2)
    )
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        first = (await start(client))["session_id"]
        await start(client)
        refused = await client.post("/api/chat/sessions", json={"persona": PERSONA}, headers=ALICE)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert (await start(client, who=BOB))["session_id"]  # another user's quota is their own
        await client.delete(f"/api/chat/sessions/{first}", headers=ALICE)
        assert (await start(client))["session_id"]  # a deletion gives room back


async def test_export_then_import_gives_the_same_conversation(client, backend):
    session = (await start(client))["session_id"]
    await say(client, session, "첫 인사")
    await client.post(
        f"/api/chat/sessions/{session}/regenerate",
        json={"temperature": 1.2, "tts_enabled": False},
        headers=ALICE,
    )
    exported = await client.get(f"/api/chat/sessions/{session}/export", headers=ALICE)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert {"user_name", "character_name"} <= set(lines[0])
    assert [line["is_user"] for line in lines[1:]] == [True, False]
    assert len(lines[2]["swipes"]) == 2 and lines[2]["swipe_id"] == 1


async def test_a_reply_longer_than_a_user_message_may_be_is_exported_imported_and_edited(
    app_client, redis_url, backend, characters_url
):
    """MAX_MESSAGE_CHARS bounds what a user writes; a reply may be longer (max_tokens,
    continue), and stays a conversation one can export, import back, edit and send."""
    settings = settings_for(
        redis_url, backend.settings, characters_url=characters_url, max_message_chars=200
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        session = (await start(client, character_id="hermione", persona=None))["session_id"]
        reply = (await say(client, session, "hi"))["content"]
        assert len(reply) > 200  # the emulator's replies are longer
        exported = await client.get(f"/api/chat/sessions/{session}/export", headers=ALICE)
        files = {"file": ("chat.jsonl", exported.content, "application/jsonl")}
        form = {"character_id": "hermione"}
        back = await client.post("/api/chat/sessions/import", files=files, data=form, headers=ALICE)
        assert back.status_code == 201, back.text
        said, answered = back.json()["data"]["messages"][-2:]
        assert answered["content"] == reply
        path = f"/api/chat/sessions/{back.json()['data']['session_id']}/messages"
        shorter = await client.patch(
            f"{path}/{answered['id']}", json={"content": reply[:-1]}, headers=ALICE
        )
        assert shorter.status_code == 200, shorter.text
        too_long = await client.patch(
            f"{path}/{said['id']}", json={"content": "가" * 201}, headers=ALICE
        )
        assert too_long.status_code == 422
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
        body = {"character_id": "hermione", "tts_enabled": False}
        sent = await client.post(
            "/api/chat",
            json={**body, "messages": [*history, {"role": "user", "content": "또"}]},
            headers=ALICE,
        )
        assert sent.status_code == 200, sent.text
        refused = await client.post(
            "/api/chat",
            json={**body, "messages": [*history, {"role": "user", "content": "가" * 201}]},
            headers=ALICE,
        )
        assert refused.status_code == 422 and "messages.2.content" in refused.text


async def test_a_conversation_whose_character_was_deleted_can_still_be_exported(
    app_client, redis_url, backend, characters_url
):
    async with chat_and_characters(
        app_client, redis_url, backend, characters_url, character_cache_s=0
    ) as (client, characters_api, _):
        made = await characters_api.post(
            "/api/characters", json={"name": "Doomed", "persona": "A doomed bard."}, headers=BOB
        )
        character_id = made.json()["data"]["id"]
        session = (await start(client, character_id=character_id, persona=None))["session_id"]
        said = await say(client, session, "기억해 줘")
        deleted = await characters_api.delete(f"/api/characters/{character_id}", headers=BOB)
        assert deleted.status_code == 200, deleted.text  # its owner, not the player, deleted it
        exported = await client.get(f"/api/chat/sessions/{session}/export", headers=ALICE)
    assert exported.status_code == 200, exported.text
    header, *lines = [json.loads(line) for line in exported.text.splitlines()]
    assert (header["user_name"], header["character_name"]) == ("User", "Character")
    assert [line["mes"] for line in lines] == ["기억해 줘", said["content"]]


async def test_a_book_stored_before_the_regex_bounds_still_plays_without_that_key(
    app_client, redis_url, redis, backend, characters_url
):
    """A regex key the bounds now refuse, in a book stored before them: characters checked
    the book when it was written, so chat reads it as checked and does not compile the key
    (which could take gigabytes); the turn skips that entry and uses the others."""
    async with chat_and_characters(
        app_client, redis_url, backend, characters_url, character_cache_s=0
    ) as (client, characters_api, _):
        made = await characters_api.post(
            "/api/characters", json={"name": "Sage", "persona": "An old sage."}, headers=ALICE
        )
        character_id = made.json()["data"]["id"]
        entries = [
            {"keys": ["sword"], "content": "SWORD LORE"},
            {"keys": ["/bomb/"], "content": "BOMB LORE"},
        ]
        book = await characters_api.put(
            f"/api/characters/{character_id}/lorebook", json={"entries": entries}, headers=ALICE
        )
        assert book.status_code == 200, book.text
        item = json.loads(await redis.get(f"characters:item:{character_id}"))
        item["lorebook"]["entries"][1]["keys"] = ["/(?:a{65535}){65535}/"]  # stored long ago
        await redis.set(f"characters:item:{character_id}", json.dumps(item))
        said = [{"role": "user", "content": "the sword and aaaa"}]
        body = {"character_id": character_id, "messages": said, "tts_enabled": False}
        turn = await client.post("/api/chat", json=body, headers=ALICE)
    assert turn.status_code == 200, turn.text
    system = backend.recorder.last.messages_received[0]["content"]
    assert "SWORD LORE" in system and "BOMB LORE" not in system


async def test_with_a_fixed_seed_each_turn_rolls_its_lore_and_a_replay_rolls_the_same(
    app_client, redis_url, backend, characters_url
):
    """SillyTavern rolls an entry's `probability` on every turn: with the request's seed
    fixed, a 50% entry goes in on some turns and not on others (it went in on all or none),
    the same conversation played again rolls the same, and a regenerate of a turn rolls
    what that turn rolled."""
    async with chat_and_characters(app_client, redis_url, backend, characters_url) as (
        client,
        characters_api,
        _,
    ):
        made = await characters_api.post(
            "/api/characters", json={"name": "Sage", "persona": "An old sage."}, headers=ALICE
        )
        character_id = made.json()["data"]["id"]
        chance = {"useProbability": True, "probability": 50}
        entries = [{"keys": ["phone"], "content": "PHONE LORE", "extensions": chance}]
        book = await characters_api.put(
            f"/api/characters/{character_id}/lorebook", json={"entries": entries}, headers=ALICE
        )
        assert book.status_code == 200, book.text

        def rang(reply: dict) -> bool:
            receipt = reply["context"]
            if not receipt["lore"]:
                assert [e["reason"] for e in receipt["lore_left_out"]] == ["probability"]
            return bool(receipt["lore"])

        async def play() -> tuple[str, list[bool]]:
            session = await start(client, character_id=character_id, persona=None)
            said = [
                await say(client, session["session_id"], f"the phone, {n}", seed=7)
                for n in range(16)
            ]
            return session["session_id"], [rang(reply) for reply in said]

        session, rolls = await play()
        assert 0 < rolls.count(True) < len(rolls)
        assert (await play())[1] == rolls
        again = await client.post(
            f"/api/chat/sessions/{session}/regenerate",
            json={"seed": 7, "tts_enabled": False},
            headers=ALICE,
        )
        assert again.status_code == 200, again.text
        assert rang(again.json()["data"]) == rolls[-1]


async def test_a_conversation_whose_persona_was_deleted_goes_on_as_the_default_user(
    app_client, redis_url, backend, characters_url
):
    async with chat_and_characters(app_client, redis_url, backend, characters_url) as (
        client,
        characters_api,
        settings,
    ):
        made = await characters_api.post(
            "/api/personas", json={"name": "Aldric", "description": "A knight."}, headers=ALICE
        )
        persona_id = made.json()["data"]["id"]
        session = (await start(client, user_persona_id=persona_id))["session_id"]
        await say(client, session, "첫 마디")
        assert "Aldric" in backend.recorder.last.messages_received[0]["content"]
        assert backend.recorder.last.sampling["stop"] == ["\nAldric:"]
        gone = await characters_api.delete(f"/api/personas/{persona_id}", headers=ALICE)
        assert gone.status_code == 200, gone.text
        turn = {"session_id": session, "message": "아직 여기 있어", "tts_enabled": False}
        answered = await client.post("/api/chat", json=turn, headers=ALICE)
        assert answered.status_code == 200, answered.text
        assert "Aldric" not in backend.recorder.last.messages_received[0]["content"]
        assert backend.recorder.last.sampling["stop"] == [f"\n{settings.default_user_name}:"]
        named = {"messages": [{"role": "user", "content": "hi"}], "persona": PERSONA}
        refused = await client.post(
            "/api/chat", json={**named, "user_persona_id": persona_id}, headers=ALICE
        )
        assert refused.status_code == 404  # a request naming it is told it is gone


async def test_a_conversation_kept_here_is_played_as_the_default_persona_it_started_with(
    app_client, redis_url, redis, backend, characters_url
):
    """SillyTavern plays a new chat as the user's default persona: a conversation started
    or imported without `user_persona_id` keeps the caller's default one (its greeting and
    its prompt's {{user}}), and goes on as it when another is chosen later; a persona named
    wins; no default is DEFAULT_USER_NAME; a client's turn uses only what it names."""
    async with chat_and_characters(app_client, redis_url, backend, characters_url) as (
        client,
        characters_api,
        settings,
    ):
        card = {"name": "Sage", "persona": "An old sage.", "first_message": "Hello, {{user}}."}
        made = await characters_api.post("/api/characters", json=card, headers=ALICE)
        character_id = made.json()["data"]["id"]

        async def persona(name: str, **more) -> str:
            body = {"name": name, "description": "A traveller.", **more}
            created = await characters_api.post("/api/personas", json=body, headers=ALICE)
            assert created.status_code == 201, created.text
            return created.json()["data"]["id"]

        def user_seen() -> str:
            """The {{user}} of the model's last prompt (its stop sequence is that name)."""
            [stop] = backend.recorder.last.sampling["stop"]
            return stop.strip("\n:")

        aldric = await persona("Aldric", is_default=True)
        first = await start(client, character_id=character_id, persona=None)
        assert first["user_persona_id"] == aldric
        assert first["messages"][0]["content"] == "Hello, Aldric."
        await say(client, first["session_id"], "첫 마디")
        assert user_seen() == "Aldric"
        assert "Aldric" in backend.recorder.last.messages_received[0]["content"]

        brenna = await persona("Brenna", is_default=True)  # another default, chosen later
        await say(client, first["session_id"], "아직 나야")
        assert user_seen() == "Aldric"  # the conversation keeps the one it started with
        branch = await client.post(
            f"/api/chat/sessions/{first['session_id']}/branch",
            json={"message_id": first["messages"][0]["id"]},
            headers=ALICE,
        )
        assert branch.json()["data"]["user_persona_id"] == aldric  # so does a branch of it
        second = await start(client, character_id=character_id, persona=None)
        assert second["user_persona_id"] == brenna
        assert second["messages"][0]["content"] == "Hello, Brenna."
        named = await start(client, character_id=character_id, persona=None, user_persona_id=aldric)
        assert named["messages"][0]["content"] == "Hello, Aldric."  # a persona named wins

        files = {"file": ("chat.jsonl", ST_CHAT.read_bytes(), "application/jsonl")}
        form = {"character_id": character_id}
        imported = await client.post(
            "/api/chat/sessions/import", files=files, data=form, headers=ALICE
        )
        assert imported.json()["data"]["user_persona_id"] == brenna

        bobs = await start(client, BOB, character_id=character_id, persona=None)
        assert bobs["user_persona_id"] is None  # Bob has no default
        assert bobs["messages"][0]["content"] == f"Hello, {settings.default_user_name}."

        # A client's conversation names its persona with each turn (no lookup per turn).
        said = [{"role": "user", "content": "hi"}]
        body = {"messages": said, "character_id": character_id, "tts_enabled": False}
        answered = await client.post("/api/chat", json=body, headers=ALICE)
        assert answered.status_code == 200, answered.text
        assert user_seen() == settings.default_user_name


async def test_a_start_is_refused_while_characters_is_out_of_reach(client_without_characters):
    """The caller's default persona cannot be learned: the conversation is not started as
    someone else (503, as for a character that cannot be read)."""
    response = await client_without_characters.post(
        "/api/chat/sessions", json={"persona": PERSONA}, headers=ALICE
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "characters_unavailable"


async def test_an_imported_chat_keeps_its_creation_date(
    app_client, redis_url, backend, characters_url
):
    app = create_app(settings_for(redis_url, backend.settings, characters_url))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        files = {"file": ("chat.jsonl", ST_CHAT.read_bytes(), "application/jsonl")}
        form = {"character_id": "hermione"}
        imported = await client.post(
            "/api/chat/sessions/import", files=files, data=form, headers=ALICE
        )
        assert imported.status_code == 201, imported.text
        session = imported.json()["data"]["session_id"]
        listed = (await client.get("/api/chat/sessions", headers=ALICE)).json()["data"]
        exported = await client.get(f"/api/chat/sessions/{session}/export", headers=ALICE)
    [conversation] = listed["conversations"]
    assert conversation["created_at"] == "2024-09-28T19:02:36.000Z"  # the file's, as UTC
    header = json.loads(exported.text.splitlines()[0])
    assert header["create_date"] == json.loads(ST_CHAT.read_text().splitlines()[0])["create_date"]


async def test_import_of_a_sillytavern_chat_needs_a_character(
    app_client, redis_url, backend, characters_url
):
    """The character and the caller's quota are checked before the file is read (reading a
    big file is the costly part): a file that would be refused for its content gets the
    character's 404, or the quota's 409, instead."""
    settings = settings_for(
        redis_url, backend.settings, characters_url=characters_url, max_conversations_per_user=1
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    broken = b'{"user_name": "a", "character_name": "b"}\n{oops'
    async with app_client(app) as client:

        async def imported(data: bytes, who=ALICE, **form: str) -> httpx.Response:
            files = {"file": ("chat.jsonl", data, "application/jsonl")}
            return await client.post(
                "/api/chat/sessions/import", files=files, data=form, headers=who
            )

        without = await imported(ST_CHAT.read_bytes())
        assert without.status_code == 422
        assert "character_id" in without.json()["error"]["message"]
        unknown = await imported(broken, character_id="nobody-such")
        assert unknown.status_code == 404, unknown.text
        assert "nobody-such" in unknown.json()["error"]["message"]
        refused = await imported(broken, character_id="hermione")
        assert refused.status_code == 422 and "Line 2" in refused.json()["error"]["message"]
        listed = (await client.get("/api/chat/sessions", headers=ALICE)).json()["data"]
        assert listed["conversations"] == []

        assert (await start(client))["session_id"]  # alice's one conversation: her quota
        full = await imported(broken, character_id="hermione")
        assert full.status_code == 409 and full.json()["error"]["code"] == "quota_exceeded"
        # An anonymous caller keeps no quota (their oldest makes room): the file is read.
        anonymous = await imported(
            broken, who=as_anonymous("anon-1", "10.0.0.5"), character_id="hermione"
        )
        assert anonymous.status_code == 422


# --- signing in keeps what the browser made (avatar_shared.adoption) ---------------------------

SIGNER = AnonymousIds(os.environ["ANON_ID_SECRET"].encode())
BROWSER = as_anonymous("anon-browser1", "10.0.0.7")


async def adopt(client, from_id: str, to: str, signed: bool = True) -> httpx.Response:
    """The call auth makes at a sign-in, signed as auth signs it."""
    adoption = Adoption(from_id=from_id, to=to)
    headers = signature_headers(SIGNER, adoption) if signed else {}
    return await client.post(ADOPT_PATH, json=adoption.body(), headers=headers)


async def test_signing_in_moves_the_browsers_conversations(client, backend, redis):
    kept = (await start(client, who=BROWSER))["session_id"]
    await say(client, kept, "익명일 때 한 말", who=BROWSER)
    record = {"messages": [{"role": "user", "content": "hi"}], "persona": PERSONA}
    recorded = await client.post("/api/chat", json=record, headers=BROWSER)
    client_session = recorded.json()["data"]["session_id"]
    stranger = (await start(client, who=as_anonymous("anon-other", "10.0.0.8")))["session_id"]

    refused = await adopt(client, "anon-browser1", "alice", signed=False)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_peer"
    answer = await adopt(client, "anon-browser1", "alice")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["conversations"] == {"moved": 2, "kept": 0}

    listed = (await client.get("/api/chat/sessions", headers=ALICE)).json()["data"]
    assert {c["session_id"] for c in listed["conversations"]} == {kept, client_session}
    assert len(await messages_of(client, kept)) == 2  # readable (and steerable) as alice
    await say(client, kept, "로그인 후", who=ALICE)
    assert await redis.ttl(f"chat:session:{kept}") == -1  # kept until deleted now
    assert await redis.ttl(f"chat:session:{client_session}") > 0  # a record still expires
    gone = await client.get(f"/api/chat/sessions/{kept}", headers=BROWSER)
    assert gone.status_code == 404
    assert (await client.get("/api/chat/sessions", headers=BROWSER)).json()["data"][
        "conversations"
    ] == []
    again = await adopt(client, "anon-browser1", "alice")
    assert again.json()["data"]["conversations"] == {"moved": 0, "kept": 0}
    other = await client.get(f"/api/chat/sessions/{stranger}", headers=ALICE)
    assert other.status_code == 404  # another browser's stayed its own


async def test_signing_in_during_a_client_kept_turn_keeps_its_conversation_anonymous(
    app_client, redis_url, characters_url
):
    # A turn of a conversation the client keeps does not hold it; signing in meanwhile must
    # not move it, or the turn's record (the anonymous id's) is refused and the reply lost.
    with emulated_llm("ollama", tokens_per_second=10) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as client:
            first = {"messages": [{"role": "user", "content": "hi"}], "persona": PERSONA}
            made = await client.post("/api/chat", json=first, headers=BROWSER)
            session = made.json()["data"]["session_id"]
            history = [*first["messages"], {"role": "assistant", "content": "answer"}]
            more = {**first, "session_id": session, "tts_enabled": False}
            more["messages"] = [*history, {"role": "user", "content": "천천히"}]
            fresh = {**first, "tts_enabled": False}  # a conversation its turn starts
            turns = [
                asyncio.create_task(client.post("/api/chat", json=body, headers=BROWSER))
                for body in (more, fresh)
            ]
            while len(slow.recorder.prompts) < 3:  # both turns have reached the LLM  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            answer = await adopt(client, "anon-browser1", "alice")
            assert answer.json()["data"]["conversations"] == {"moved": 0, "kept": 2}
            for turn in turns:
                assert (await turn).status_code == 200
            assert len(await messages_of(client, session, who=BROWSER)) == 4
            again = await adopt(client, "anon-browser1", "alice")  # the next sign-in
            assert again.json()["data"]["conversations"] == {"moved": 2, "kept": 0}
            assert len(await messages_of(client, session)) == 4


async def test_what_does_not_fit_the_account_stays_anonymous(
    app_client, redis_url, characters_url, backend
):
    app = create_app(
        settings_for(redis_url, backend.settings, characters_url, max_conversations_per_user=2)
    )
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        await start(client)  # alice has one already
        made = [(await start(client, who=BROWSER))["session_id"] for _ in range(2)]
        answer = await adopt(client, "anon-browser1", "alice")
        assert answer.json()["data"]["conversations"] == {"moved": 1, "kept": 1}
        # The older moved; the newer is still the browser's.
        assert (await client.get(f"/api/chat/sessions/{made[0]}", headers=ALICE)).status_code == 200
        assert (
            await client.get(f"/api/chat/sessions/{made[1]}", headers=BROWSER)
        ).status_code == 200


async def test_a_conversation_generating_a_reply_is_never_evicted(
    app_client, redis_url, characters_url, redis
):
    # An anonymous address keeps 2 sessions; a third makes room, but not by taking the one
    # whose reply is being generated.
    with emulated_llm("ollama", tokens_per_second=10) as slow:
        settings = settings_for(
            redis_url, slow.settings, characters_url, max_stored_sessions_per_address=2
        )
        app = create_app(settings)
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as client:
            busy = (await start(client, who=BROWSER))["session_id"]
            other = (await start(client, who=BROWSER))["session_id"]
            body = {"session_id": busy, "message": "천천히", "tts_enabled": False}
            turn = asyncio.create_task(client.post("/api/chat", json=body, headers=BROWSER))
            while not slow.recorder.prompts:  # the turn has reached the LLM  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await start(client, who=BROWSER)
            assert (await turn).status_code == 200
            assert len(await messages_of(client, busy, who=BROWSER)) == 2
            gone = await client.get(f"/api/chat/sessions/{other}", headers=BROWSER)
            assert gone.status_code == 404  # the least recently used one that was free
    for key in await redis.keys("chat:session:*"):
        assert await redis.ttl(key) > 0, key  # an anonymous caller's: nothing kept for good


async def test_a_branch_never_evicts_the_conversation_it_is_made_from(
    app_client, redis_url, characters_url, backend
):
    # An anonymous address keeps 2 sessions; a branch of the least recently written one makes
    # room by taking the other, not its own source (whose messages past the branch point
    # would be lost for good).
    settings = settings_for(
        redis_url, backend.settings, characters_url, max_stored_sessions_per_address=2
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        source = (await start(client, who=BROWSER))["session_id"]
        other = (await start(client, who=BROWSER))["session_id"]
        point = await say(client, source, "갈림길 전", who=BROWSER)
        await say(client, source, "원래 길", who=BROWSER)
        await say(client, other, "나중에 쓴 대화", who=BROWSER)  # the source is now the oldest
        branch = await client.post(
            f"/api/chat/sessions/{source}/branch",
            json={"message_id": point["message_id"]},
            headers=BROWSER,
        )
        assert branch.status_code == 201, branch.text
        assert len(await messages_of(client, source, who=BROWSER)) == 4
        gone = await client.get(f"/api/chat/sessions/{other}", headers=BROWSER)
        assert gone.status_code == 404


async def test_a_turn_sent_as_messages_cannot_write_into_a_kept_conversation(client, backend):
    session = (await start(client))["session_id"]
    body = {"session_id": session, "messages": [{"role": "user", "content": "x"}]}
    response = await client.post("/api/chat", json={**body, "persona": PERSONA}, headers=ALICE)
    assert response.status_code == 422
    assert "`message`" in response.json()["error"]["message"]
    assert await messages_of(client, session) == []


async def test_a_full_byte_quota_never_refuses_choosing_a_stored_alternate(client, redis):
    session = (await start(client))["session_id"]
    reply = await say(client, session, "짧은 말")
    regenerate = f"/api/chat/sessions/{session}/regenerate"
    assert (await client.post(regenerate, json={}, headers=ALICE)).status_code == 200
    message = f"/api/chat/sessions/{session}/messages/{reply['message_id']}"
    longer = "길게 " * 100
    edited = await client.patch(message, json={"content": longer}, headers=ALICE)
    assert edited.status_code == 200, edited.text  # the second alternate, shown
    shorter = await client.put(f"{message}/swipe", json={"index": 0}, headers=ALICE)
    assert shorter.status_code == 200, shorter.text
    await redis.hset("chat:kept:alice", "bytes", 32 * 1024 * 1024 - 10)  # her quota spent
    back = await client.put(f"{message}/swipe", json={"index": 1}, headers=ALICE)
    assert back.status_code == 200, back.text
    assert (await messages_of(client, session))[-1]["content"] == longer


async def test_a_full_byte_quota_refuses_growth_but_not_shrinking(client, backend, redis):
    session = (await start(client))["session_id"]
    first = await say(client, session, "짧은 말")
    # Alice's other kept conversations hold all but 10 bytes of her quota: less than the
    # new message.
    await redis.hset("chat:kept:alice", "bytes", 32 * 1024 * 1024 - 10)
    turn = {"session_id": session, "message": "한 마디 더", "tts_enabled": False}
    refused = await client.post("/api/chat", json=turn, headers=ALICE)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "quota_exceeded"
    path = f"/api/chat/sessions/{session}/messages/{first['message_id']}"
    longer = await client.patch(path, json={"content": "길게 " * 100}, headers=ALICE)
    assert longer.status_code == 409 and longer.json()["error"]["code"] == "quota_exceeded"
    shorter = await client.patch(path, json={"content": "응"}, headers=ALICE)
    assert shorter.status_code == 200, shorter.text
    assert len(await messages_of(client, session)) == 2


async def test_a_reply_stopped_at_its_start_keeps_the_users_message(
    redis_url, characters_url, redis
):
    with emulated_llm("ollama", first_token_latency_s=1.0, tokens_per_second=20) as slow:
        app = create_app(settings_for(redis_url, slow.settings, characters_url))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
                session = (await start(client))["session_id"]
                body = {"session_id": session, "message": "대답 전에 멈춰", "stream": True}
                with pytest.raises(httpx.ReadTimeout):  # the user stops before any text
                    await client.post("/api/chat", json=body, headers=ALICE, timeout=0.3)
                for _ in range(60):  # the server notices when the first text cannot be sent
                    stored = await messages_of(client, session)
                    if stored:
                        break
                    await asyncio.sleep(0.1)
                # The message is kept; a reply, if its first word left before the server saw
                # the client gone, is kept as far as it was sent, marked interrupted.
                assert (stored[0]["role"], stored[0]["content"]) == ("user", "대답 전에 멈춰")
                assert all(m["interrupted"] for m in stored[1:]) and len(stored) <= 2
                # Recorded, it is no failed turn: it keeps its active place.
                await no_turn_in_flight(redis)
                assert session in await redis.zrange("chat:active", 0, -1)
                # Then a regenerate gives it a whole reply.
                answer = await client.post(
                    f"/api/chat/sessions/{session}/regenerate",
                    json={"tts_enabled": False},
                    headers=ALICE,
                )
                assert answer.status_code == 200, answer.text
                _, reply = await messages_of(client, session)
                assert reply["role"] == "assistant" and not reply["interrupted"]


async def test_an_accounts_list_sheds_its_expired_records(
    app_client, redis_url, characters_url, backend, redis
):
    app = create_app(settings_for(redis_url, backend.settings, characters_url, session_ttl_s=1))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        record = {"messages": [{"role": "user", "content": "hi"}], "persona": PERSONA}
        first = (await client.post("/api/chat", json=record, headers=ALICE)).json()["data"]
        assert await redis.zscore("chat:library:alice", first["session_id"]) is not None
        await asyncio.sleep(1.2)  # it expires
        await client.post("/api/chat", json=record, headers=ALICE)  # alice's next record
    assert await redis.zscore("chat:library:alice", first["session_id"]) is None
    assert await redis.zcard("chat:library:alice") == 1
