"""Long-term memories (issue 28), through the chat app against a real Redis, the real
characters service (its presets: hermione, sherlock) and the LLM emulators, whose structured
answers the test scripts: a user message holding `[[key=...; kind=...; text=...]]` is what
"the model" reads out of it as a fact (avatar_emulators.structured).

Covered: the API (owner only, pages, edits with history, pins, quotas); facts learned in one
conversation reaching a new one with the same character, and not another character or user;
a contradiction replacing; pinned ones always in; read-only and off; a malformed answer
storing nothing; a quiet conversation read; edits and branches."""

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.app import create_app
from avatar_chat.memory.learning import SAVE_MARK
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.adoption import ADOPT_PATH, Adoption, signature_headers
from avatar_shared.identity import AnonymousIds, current_identity

from .helpers import (
    Backend,
    as_anonymous,
    as_signed_in,
    callers_from_test_headers,
    emulated_llm,
)
from .summarizing import is_summary_call, summary_count

ALICE = as_signed_in("alice", "10.0.0.1")
BOB = as_signed_in("bob", "10.0.0.2")
LEARN_EVERY = 4  # messages: two turns


def fact(key: str, text: str, kind: str = "preference") -> str:
    """A fact as the emulator's scripted model reads it out of a message; words follow it,
    as the emulator's reply reads a message's last six words backwards (a fact among them
    would come back cut and mixed with the next line's)."""
    return f"[[key={key}; kind={kind}; text={text}]] 오늘 날씨가 정말 좋네 그치 응"


@pytest.fixture(scope="module")
def characters_url(redis_url: str) -> Iterator[str]:
    app = characters_app(CharactersSettings(redis_url=redis_url))
    with serve_in_thread(app, lifespan="on") as url:
        yield url


def settings_for(redis_url: str, characters_url: str, backend: Backend, **extra: Any) -> Any:
    return ChatSettings(
        redis_url=redis_url,
        characters_url=characters_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        chat_rate_per_min=10_000,
        **{"memory_learn_every": LEARN_EVERY, "memory_idle_s": 600, **backend.settings, **extra},
    )


@pytest.fixture
async def client(
    app_client, redis_url, characters_url, backend
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(redis_url, characters_url, backend))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        yield client


async def start(client, who=ALICE, character_id: str = "hermione", **extra) -> str:
    body = {"character_id": character_id, **extra}
    response = await client.post("/api/chat/sessions", json=body, headers=who)
    assert response.status_code == 201, response.text
    return response.json()["data"]["session_id"]


async def say(client, session_id: str, text: str, who=ALICE) -> dict:
    body = {"session_id": session_id, "message": text, "tts_enabled": False}
    response = await client.post("/api/chat", json=body, headers=who)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def branch_at(client, session_id: str, message_id: str) -> str:
    point = {"message_id": message_id}
    response = await client.post(
        f"/api/chat/sessions/{session_id}/branch", json=point, headers=ALICE
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["session_id"]


async def memories(client, who=ALICE, **query: str) -> list[dict]:
    response = await client.get("/api/memories", params=query, headers=who)
    assert response.status_code == 200, response.text
    return response.json()["data"]["memories"]


async def learned(client, count: int, who=ALICE, **query: str) -> list[dict]:
    """The caller's learned memories once there are `count` (learning runs in the
    background: waited for, up to a generous deadline)."""
    deadline = time.monotonic() + 20
    while True:
        found = [m for m in await memories(client, who, **query) if m["source"] == "learned"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def idle(backend: Backend, seconds: float = 1.5) -> None:
    """Waits until no call has reached the LLM for `seconds` (background work done)."""
    seen = -1
    while seen != len(backend.recorder.prompts):
        seen = len(backend.recorder.prompts)
        await asyncio.sleep(seconds)


def last_system(backend: Backend) -> str:
    replies = [p for p in backend.recorder.prompts if p.format is None]
    return replies[-1].messages_received[0]["content"]


# --- the API ---------------------------------------------------------------------------------


async def test_a_user_adds_lists_edits_pins_and_deletes_memories(client):
    made = []
    for n in range(5):
        body = {"character_id": "hermione", "text": f"  기억 {n}  ", "pinned": n == 0}
        response = await client.post("/api/memories", json=body, headers=ALICE)
        assert response.status_code == 201, response.text
        made.append(response.json()["data"])
    assert made[0]["text"] == "기억 0" and made[0]["pinned"] and made[0]["source"] == "user"
    other = await client.post(
        "/api/memories", json={"character_id": "sherlock", "text": "탐정"}, headers=ALICE
    )
    assert other.status_code == 201

    first = await client.get("/api/memories?character_id=hermione&limit=2", headers=ALICE)
    page = first.json()["data"]
    assert [m["text"] for m in page["memories"]] == ["기억 4", "기억 3"]  # newest first
    rest = await client.get(
        f"/api/memories?character_id=hermione&limit=10&cursor={page['next_cursor']}",
        headers=ALICE,
    )
    assert [m["text"] for m in rest.json()["data"]["memories"]] == ["기억 2", "기억 1", "기억 0"]
    assert rest.json()["data"]["next_cursor"] is None
    assert len(await memories(client)) == 6  # every character's

    memory_id = made[1]["id"]
    edited = await client.patch(
        f"/api/memories/{memory_id}", json={"text": "고친 기억", "pinned": True}, headers=ALICE
    )
    assert edited.status_code == 200, edited.text
    data = edited.json()["data"]
    assert data["text"] == "고친 기억" and data["pinned"]
    assert [h["text"] for h in data["history"]] == ["기억 1"]

    deleted = await client.delete(f"/api/memories/{memory_id}", headers=ALICE)
    assert deleted.json()["data"] == {"memory_id": memory_id, "deleted": True}
    gone = await client.get(f"/api/memories/{memory_id}", headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "memory_not_found"


async def test_another_users_memories_are_not_found_and_unchanged(client):
    made = await client.post(
        "/api/memories", json={"character_id": "hermione", "text": "앨리스의 비밀"}, headers=ALICE
    )
    memory_id = made.json()["data"]["id"]
    for response in (
        await client.get(f"/api/memories/{memory_id}", headers=BOB),
        await client.patch(f"/api/memories/{memory_id}", json={"text": "x"}, headers=BOB),
        await client.delete(f"/api/memories/{memory_id}", headers=BOB),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "memory_not_found"
    assert await memories(client, BOB) == []
    [kept] = await memories(client)
    assert kept["text"] == "앨리스의 비밀"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"character_id": "hermione", "text": ""}, 422, "validation_error"),
        ({"character_id": "hermione", "text": "x" * 501}, 422, "validation_error"),
        ({"character_id": "hermione", "text": "x", "extra": 1}, 422, "validation_error"),
        ({"character_id": "../etc", "text": "x"}, 422, "validation_error"),
        ({"character_id": "nobody-here", "text": "x"}, 404, "character_not_found"),
    ],
)
async def test_bad_memories_are_refused_and_nothing_is_stored(client, body, status, code):
    response = await client.post("/api/memories", json=body, headers=ALICE)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await memories(client) == []


async def test_memories_past_the_quota_are_409(app_client, redis_url, characters_url, backend):
    app = create_app(settings_for(redis_url, characters_url, backend, max_memories_per_user=3))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        for n in range(3):
            body = {"character_id": "hermione", "text": f"사실 {n}"}
            assert (await client.post("/api/memories", json=body, headers=ALICE)).status_code == 201
        body = {"character_id": "sherlock", "text": "하나 더"}
        refused = await client.post("/api/memories", json=body, headers=ALICE)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert len(await memories(client)) == 3
        # Bob's quota is his own.
        assert (await client.post("/api/memories", json=body, headers=BOB)).status_code == 201


# --- learning and using ----------------------------------------------------------------------


async def test_what_one_conversation_teaches_reaches_the_next_with_that_character_only(
    client, backend
):
    first = await start(client)
    await say(
        client, first, "안녕! 나는 민수야. " + fact("user.name", "The user's name is Minsu", "name")
    )
    await say(client, first, "나는 재즈를 좋아해. " + fact("user.likes.music", "Minsu loves jazz"))
    [jazz, name] = sorted(await learned(client, 2), key=lambda m: m["key"])
    assert name["text"] == "The user's name is Minsu" and name["kind"] == "name"
    assert jazz["key"] == "user.likes.music" and jazz["session_id"] == first
    reading = [p for p in backend.recorder.prompts if p.format is not None]
    assert len(reading) == 1  # both facts in one reading of the four messages
    assert "나는 재즈를 좋아해" in reading[0].messages_received[-1]["content"]

    second = await start(client)
    reply = await say(client, second, "오늘 뭐 듣고 싶어? jazz 얘기 하자.")
    system = last_system(backend)
    assert "# What 헤르미온느 그레인저 remembers about User" in system
    assert "- Minsu loves jazz" in system
    used = {m["text"] for m in reply["context"]["memories"]}
    assert "Minsu loves jazz" in used
    assert reply["context"]["tokens"]["memories"] > 0

    other_character = await start(client, character_id="sherlock")
    reply = await say(client, other_character, "jazz 얘기 하자, Minsu.")
    assert "Minsu" not in last_system(backend) and reply["context"]["memories"] == []
    bobs = await start(client, who=BOB)
    reply = await say(client, bobs, "jazz 얘기 하자, Minsu.", who=BOB)
    assert "Minsu" not in last_system(backend) and reply["context"]["memories"] == []


async def test_the_learning_call_asks_for_structured_facts_behind_the_turns(client, backend):
    session = await start(client)
    await say(client, session, "첫 인사")
    await say(client, session, "둘째 말 " + fact("user.mood", "The user is tired today"))
    await learned(client, 1)
    [reading] = [p for p in backend.recorder.prompts if p.format is not None]
    schema = reading.format if backend.name == "ollama" else reading.format["json_schema"]["schema"]
    assert schema["required"] == ["facts"]
    assert reading.messages_received[0]["role"] == "system"
    assert "long-term memory" in reading.messages_received[0]["content"]


async def test_a_newer_fact_for_the_same_slot_replaces_the_older(client):
    session = await start(client)
    await say(
        client, session, "내 이름은 민수. " + fact("user.name", "The user is called Minsu", "name")
    )
    await say(client, session, "그렇구나.")
    [before] = await learned(client, 1)
    await say(
        client, session, "사실 지수야. " + fact("user.name", "The user is called Jisu", "name")
    )
    await say(client, session, "미안해.")
    deadline = time.monotonic() + 20
    while (await learned(client, 1))[0]["text"] != "The user is called Jisu":
        assert time.monotonic() < deadline, "the newer fact never replaced the older"
        await asyncio.sleep(0.05)
    [after] = await learned(client, 1)
    assert after["id"] == before["id"]
    assert [h["text"] for h in after["history"]] == ["The user is called Minsu"]


async def test_a_fact_said_again_under_another_slot_is_not_stored_twice(client, backend):
    session = await start(client)
    await say(client, session, "하나 " + fact("user.pet", "The user has a cat named Nabi"))
    await say(client, session, "둘")
    await learned(client, 1)
    await say(client, session, "셋 " + fact("pets.cat", "the user has a cat named nabi"))
    await say(client, session, "넷")
    await idle(backend)
    assert [m["text"] for m in await memories(client)] == ["The user has a cat named Nabi"]


async def test_a_pinned_memory_is_always_in_and_others_only_when_relevant(client, backend):
    body = {"character_id": "hermione", "text": "The user is allergic to peanuts", "pinned": True}
    assert (await client.post("/api/memories", json=body, headers=ALICE)).status_code == 201
    for n in range(30):
        body = {"character_id": "hermione", "text": f"The user visited city number {n} once"}
        assert (await client.post("/api/memories", json=body, headers=ALICE)).status_code == 201
    session = await start(client)
    reply = await say(client, session, "What a lovely library!")
    system = last_system(backend)
    assert "- The user is allergic to peanuts" in system
    assert "city number" not in system  # nothing about the library
    assert [m["text"] for m in reply["context"]["memories"]] == ["The user is allergic to peanuts"]
    reply = await say(client, session, "Remember city number 17?")
    texts = [m["text"] for m in reply["context"]["memories"]]
    assert texts[0] == "The user is allergic to peanuts"
    assert texts[1] == "The user visited city number 17 once"  # the best match first


async def test_read_only_uses_memories_and_learns_nothing_and_off_uses_none(client, backend):
    body = {"character_id": "hermione", "text": "The user plays the violin"}
    assert (await client.post("/api/memories", json=body, headers=ALICE)).status_code == 201
    trying = await start(client, memory="read_only")
    reply = await say(client, trying, "violin? " + fact("user.job", "The user is a pilot"))
    assert [m["text"] for m in reply["context"]["memories"]] == ["The user plays the violin"]
    await say(client, trying, "violin " + fact("user.home", "The user lives on the moon"))
    await idle(backend)
    assert [p for p in backend.recorder.prompts if p.format is not None] == []
    assert await learned(client, 0) == []

    off = await start(client, memory="off")
    reply = await say(client, off, "violin?")
    assert reply["context"]["memories"] == [] and "violin" not in last_system(backend)
    # A conversation's mode can be changed, and its list shows it.
    changed = await client.patch(f"/api/chat/sessions/{off}", json={"memory": "on"}, headers=ALICE)
    assert changed.status_code == 200 and changed.json()["data"]["memory"] == "on"
    reply = await say(client, off, "violin?")
    assert [m["text"] for m in reply["context"]["memories"]] == ["The user plays the violin"]


async def test_a_malformed_answer_stores_nothing(client, backend):
    session = await start(client)
    await say(client, session, "하나 " + fact("user.food", "The user likes kimchi", kind="gossip"))
    await say(client, session, "둘 " + fact("user.drink", "The user likes tea"))
    await idle(backend)
    assert len([p for p in backend.recorder.prompts if p.format is not None]) == 1
    assert await learned(client, 0) == []  # one bad fact: the whole answer is refused


async def test_a_quiet_conversation_is_read_without_waiting_for_more_messages(
    app_client, redis_url, characters_url, backend
):
    app = create_app(settings_for(redis_url, characters_url, backend, memory_idle_s=1))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        session = await start(client)
        await say(client, session, "잠깐 " + fact("user.city", "The user lives in Busan"))
        [memory] = await learned(client, 1)
        assert memory["text"] == "The user lives in Busan"


# --- edits and branches ------------------------------------------------------------------------


async def messages_of(client, session_id: str) -> list[dict]:
    response = await client.get(f"/api/chat/sessions/{session_id}", headers=ALICE)
    return response.json()["data"]["messages"]


async def test_a_fact_edited_away_is_forgotten(client):
    session = await start(client)
    said = await say(client, session, "나는 " + fact("user.age", "The user is 40 years old"))
    await say(client, session, "그래")
    assert len(await learned(client, 1)) == 1
    edited = await client.patch(
        f"/api/chat/sessions/{session}/messages/{said['user_message_id']}",
        json={"content": "나는 비밀이야"},
        headers=ALICE,
    )
    assert edited.status_code == 200, edited.text
    assert await learned(client, 0) == []


async def test_a_branch_does_not_know_what_its_source_learned_after_the_branch_point(
    client, backend
):
    source = await start(client)
    await say(client, source, "처음 " + fact("user.name", "The user is Minsu", "name"))
    read_up_to_here = await say(client, source, "응")
    await learned(client, 1)
    await say(client, source, "나중 " + fact("user.secret", "Minsu hides a dragon egg"))
    await say(client, source, "쉿 dragon egg")
    assert len(await learned(client, 2)) == 2

    # A fact belongs to the reading that found it: the branch holds the first reading's
    # messages, not the second's.
    branch = await branch_at(client, source, read_up_to_here["message_id"])
    reply = await say(client, branch, "Minsu dragon egg?")
    used = [m["text"] for m in reply["context"]["memories"]]
    assert "The user is Minsu" in used  # learned before the branch point
    assert "Minsu hides a dragon egg" not in used and "dragon egg" not in last_system(backend)
    # A new conversation (not of that lineage) knows both.
    fresh = await start(client)
    reply = await say(client, fresh, "Minsu dragon egg?")
    assert {m["text"] for m in reply["context"]["memories"]} == {
        "The user is Minsu",
        "Minsu hides a dragon egg",
    }


# --- signing in ----------------------------------------------------------------------------------

SIGNER = AnonymousIds(os.environ["ANON_ID_SECRET"].encode())


async def test_signing_in_moves_the_browsers_memories(client, redis):
    browser = as_anonymous("anon-browser9", "10.0.0.9")
    body = {"character_id": "hermione", "text": "익명일 때 알려 준 것"}
    assert (await client.post("/api/memories", json=body, headers=browser)).status_code == 201
    assert 0 < await redis.ttl("memories:owner:anon-browser9")  # anonymous: it expires
    adoption = Adoption(from_id="anon-browser9", to="alice")
    answer = await client.post(
        ADOPT_PATH, json=adoption.body(), headers=signature_headers(SIGNER, adoption)
    )
    assert answer.json()["data"]["memories"] == {"moved": 1, "kept": 0}
    assert [m["text"] for m in await memories(client)] == ["익명일 때 알려 준 것"]
    assert await memories(client, browser) == []
    assert 0 < await redis.ttl("memories:version:anon-browser9")  # nothing of theirs stays


# --- one call for a summary and the facts --------------------------------------------------------


@contextlib.asynccontextmanager
async def summarizing_ahead(
    app_client,
    redis_url: str,
    characters_url: str,
    window: int | None = None,
    reply_words: int = 0,
    **overrides: Any,
) -> AsyncIterator[tuple[Any, Backend]]:
    """A client of a chat whose summaries are made ahead early, in a small window, and whose
    readings never come on their own: only a summary's call could read facts. `window`: a
    vLLM that refuses a call past it (else Ollama's 3,072); `reply_words`: the length of
    every answer of the model (0: its usual); `overrides`: settings."""
    llm, server = ("vllm", {"max_model_len": window}) if window else ("ollama", {})
    with emulated_llm(llm, reply_words=reply_words, **server) as backend:
        settings = settings_for(
            redis_url,
            characters_url,
            backend,
            **{
                "llm_context_tokens": window or 3072,
                "keep_recent_turns": 4,
                "summary_ahead_ratio": 0.3,
                "summary_trigger_ratio": 0.8,
                "memory_learn_every": 1000,
                **overrides,
            },
        )
        app = create_app(settings)
        app.dependency_overrides[current_identity] = callers_from_test_headers
        async with app_client(app) as client:
            yield client, backend


async def test_a_summary_made_ahead_lists_the_facts_too(app_client, redis_url, characters_url):
    async with summarizing_ahead(app_client, redis_url, characters_url) as (client, backend):
        said = "I keep telling stories about the old library by the river. " * 12
        turns = [{"role": "user", "content": "안녕 " + fact("user.pet", "The user has a cat")}]
        body: dict = {"character_id": "hermione", "tts_enabled": False}
        for n in range(8):
            body["messages"] = turns
            response = await client.post("/api/chat", json=body, headers=ALICE)
            assert response.status_code == 200, response.text
            body["session_id"] = response.json()["data"]["session_id"]
            reply = response.json()["data"]["content"]
            turns += [{"role": "assistant", "content": reply}]
            turns += [{"role": "user", "content": f"{n}: {said}"}]
        found = await learned(client, 1)
    assert [m["text"] for m in found] == ["The user has a cat"]
    structured = [p for p in backend.recorder.prompts if p.format is not None]
    assert structured and all("summary" in p.format["properties"] for p in structured)
    assert structured[0].messages_received[0]["content"].startswith("You keep the memory")


async def test_a_summary_made_ahead_with_facts_fits_the_window_with_their_answer(
    app_client, redis_url, characters_url
):
    """The call that also lists facts asks for their answer too (MEMORY_LEARN_MAX_TOKENS)
    and says more: its block of turns is smaller, so the call fits the window a model
    server refuses to pass (vLLM: prompt plus max_tokens past max_model_len is a 400)."""
    window = 2048
    async with summarizing_ahead(
        app_client,
        redis_url,
        characters_url,
        window,
        summary_max_tokens=64,
        memory_learn_max_tokens=1024,
    ) as (client, backend):
        turns = [{"role": "user", "content": "안녕 " + fact("user.pet", "The user has a cat")}]
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        said = "I keep telling stories about the old library by the river. " * 6
        # The first turn teaches the estimate the model's tokens; after each later reply a
        # summary is made ahead (or left for the next while the turn holds the call).
        for n in range(4):
            body["messages"] = turns
            response = await client.post("/api/chat", json=body, headers=ALICE)
            assert response.status_code == 200, response.text
            body["session_id"] = response.json()["data"]["session_id"]
            turns += [{"role": "assistant", "content": response.json()["data"]["content"]}]
            for i in range(14 if n == 0 else 0):  # history new to the server, aged at once
                turns += [{"role": "user", "content": f"{i}: {said}"}]
                turns += [{"role": "assistant", "content": "A fine story."}]
            turns += [{"role": "user", "content": "And then?"}]
        found = await learned(client, 1)
    assert [m["text"] for m in found] == ["The user has a cat"]
    structured = [p for p in backend.recorder.prompts if p.format is not None]
    assert structured and all(p.prompt_tokens + 64 + 1024 <= window for p in structured)


async def test_a_long_summary_so_far_is_extended_ahead_without_the_facts(
    app_client, redis_url, characters_url
):
    """Past a long summary so far, a call that also lists facts leaves no room for turns in
    a 2,048-token window (both answers, 512 tokens each): the summary made ahead goes on
    alone (their facts left for the memory's own reading), so the next turn does not wait
    to make it."""
    # Every answer 900 words: a summary listed with facts takes most of their 1,024 tokens.
    async with summarizing_ahead(app_client, redis_url, characters_url, 2048, reply_words=900) as (
        client,
        backend,
    ):
        body: dict = {"character_id": "hermione", "tts_enabled": False, "max_tokens": 64}
        turns = [{"role": "user", "content": "안녕 " + fact("user.pet", "The user has a cat")}]
        turns = await client_turn(client, body, turns, "on")  # teaches the estimate
        failed = await summary_count(client, "ahead", "failed")
        said = "I keep telling stories about the old library by the river. " * 6
        for i in range(20):  # history new to the server, near the window: aged at once
            turns += [{"role": "user", "content": f"{i}: {said}"}]
            turns += [{"role": "assistant", "content": "A fine story."}]
        turns = await client_turn(client, body, [*turns, {"role": "user", "content": "So?"}], "on")
        await idle(backend)  # its summary made ahead, in as many calls as it takes
        failed = await summary_count(client, "ahead", "failed") - failed
        in_turn = await summary_count(client, "in_turn", "made")
        await client_turn(client, body, [*turns, {"role": "user", "content": "And then?"}], "on")
        made_in_turn = await summary_count(client, "in_turn", "made") - in_turn
        found = await learned(client, 1)
    assert made_in_turn == 0  # the turn did not wait for a summary of its own
    assert failed == 0
    assert [m["text"] for m in found] == ["The user has a cat"]  # the first call's facts
    summaries = [p for p in backend.recorder.prompts if is_summary_call(p)]
    assert any(p.format is None for p in summaries)  # later ones, the summary alone


# --- what the review found: branches, edits while queued, modes switched back, pins ---------


async def outcome_count(client, outcome: str) -> float:
    """avatar_chat_memory_learning_total{outcome=...} from the app's /metrics."""
    text = (await client.get("/metrics")).text
    found = re.search(rf'avatar_chat_memory_learning_total\{{outcome="{outcome}"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


async def counted(client, outcome: str, at_least: float) -> bool:
    deadline = time.monotonic() + 20
    while await outcome_count(client, outcome) < at_least:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_chatting_in_a_branch_leaves_the_sources_memories_to_it(client, backend):
    source = await start(client)
    await say(client, source, "처음 " + fact("user.name", "The user is Minsu", "name"))
    read_here = await say(client, source, "응 Minsu")
    [memory] = await learned(client, 1)
    branch = await branch_at(client, source, read_here["message_id"])
    await say(client, branch, "브랜치 Minsu " + fact("user.name", "The user is Minsu"))
    await say(client, branch, "또 " + fact("user.food", "Minsu likes bibimbap"))
    assert {m["text"] for m in await learned(client, 2)} == {
        "The user is Minsu",
        "Minsu likes bibimbap",
    }
    # The branch read only its own messages: the fact said again kept its origin.
    readings = [p for p in backend.recorder.prompts if p.format is not None]
    assert "처음" not in readings[-1].messages_received[-1]["content"]
    [kept] = [m for m in await learned(client, 2) if m["key"] == "user.name"]
    assert kept["session_id"] == source and kept["id"] == memory["id"]
    reply = await say(client, source, "Minsu?")
    assert "The user is Minsu" in [m["text"] for m in reply["context"]["memories"]]


async def test_an_edit_or_a_delete_while_a_reading_waits_teaches_nothing(
    app_client, redis_url, characters_url, backend, redis
):
    app = create_app(settings_for(redis_url, characters_url, backend, memory_idle_s=2))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        edited = await start(client)
        said = await say(client, edited, "비밀 " + fact("user.secret", "The user owns a yacht"))
        deleted = await start(client)
        await say(client, deleted, "비밀 " + fact("user.hobby", "The user collects stamps"))
        deadline = time.monotonic() + 10  # both wait to go quiet (scheduled after the reply)
        while await redis.zcard("chat:memory:due") < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert await redis.zcard("chat:memory:due") == 2
        patched = await client.patch(
            f"/api/chat/sessions/{edited}/messages/{said['user_message_id']}",
            json={"content": "아무것도 아니야"},
            headers=ALICE,
        )
        assert patched.status_code == 200
        assert (
            await client.delete(f"/api/chat/sessions/{deleted}", headers=ALICE)
        ).status_code == 200
        assert await redis.zcard("chat:memory:due") == 0
        assert await redis.keys("chat:memory:job:*") == []
        # A third conversation, said and left quiet, is read: the sweeper works meanwhile.
        third = await start(client)
        await say(client, third, "진짜 " + fact("user.city", "The user lives in Daegu"))
        assert [m["text"] for m in await learned(client, 1)] == ["The user lives in Daegu"]


async def test_what_was_said_in_read_only_is_not_learned_once_memory_is_back_on(client, backend):
    session = await start(client, memory="read_only")
    await say(client, session, "시험 " + fact("user.job", "The user is an astronaut"))
    await say(client, session, "그냥 해 본 말")
    changed = await client.patch(
        f"/api/chat/sessions/{session}", json={"memory": "on"}, headers=ALICE
    )
    assert changed.json()["data"]["memory"] == "on"
    await say(client, session, "이제 진짜 " + fact("user.pet", "The user has a parrot"))
    await say(client, session, "정말이야")
    assert [m["text"] for m in await learned(client, 1)] == ["The user has a parrot"]
    [reading] = [p for p in backend.recorder.prompts if p.format is not None]
    assert "astronaut" not in reading.messages_received[-1]["content"]


async def test_a_malformed_reading_is_counted_and_stores_nothing(client):
    session = await start(client)
    await say(client, session, "하나 " + fact("User Name!", "The user is Dana", kind="name"))
    await say(client, session, "둘")
    assert await counted(client, "malformed", 1)
    assert await memories(client) == []


async def test_a_memory_the_user_changed_is_theirs_learning_leaves_it(client):
    session = await start(client)
    said = await say(client, session, "나 " + fact("user.age", "The user is 30"))
    await say(client, session, "응")
    [memory] = await learned(client, 1)
    pinned = await client.patch(
        f"/api/memories/{memory['id']}", json={"pinned": True}, headers=ALICE
    )
    assert pinned.json()["data"]["source"] == "user"
    await say(client, session, "사실 " + fact("user.age", "The user is 31"))
    await say(client, session, "응응")
    assert await counted(client, "learned", 2)
    texts = {m["text"] for m in await memories(client)}
    assert "The user is 30" in texts  # not replaced: it is the user's now
    await client.patch(
        f"/api/chat/sessions/{session}/messages/{said['user_message_id']}",
        json={"content": "나 비밀"},
        headers=ALICE,
    )
    assert "The user is 30" in {m["text"] for m in await memories(client)}  # not forgotten


async def test_pins_per_character_are_bounded(app_client, redis_url, characters_url, backend):
    app = create_app(settings_for(redis_url, characters_url, backend, max_pinned_memories=2))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        for n in range(2):
            body = {"character_id": "hermione", "text": f"고정 {n}", "pinned": True}
            assert (await client.post("/api/memories", json=body, headers=ALICE)).status_code == 201
        body = {"character_id": "hermione", "text": "하나 더", "pinned": True}
        refused = await client.post("/api/memories", json=body, headers=ALICE)
        assert (
            refused.status_code == 409 and "unpin one first" in refused.json()["error"]["message"]
        )
        loose = await client.post("/api/memories", json={**body, "pinned": False}, headers=ALICE)
        memory_id = loose.json()["data"]["id"]
        pin = await client.patch(f"/api/memories/{memory_id}", json={"pinned": True}, headers=ALICE)
        assert pin.status_code == 409
        other = {"character_id": "sherlock", "text": "다른 캐릭터", "pinned": True}
        assert (await client.post("/api/memories", json=other, headers=ALICE)).status_code == 201


async def test_concurrent_pins_do_not_pass_the_bound(
    app_client, redis_url, characters_url, backend
):
    app = create_app(settings_for(redis_url, characters_url, backend, max_pinned_memories=2))
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:
        loose = {"character_id": "hermione", "text": "고정 전", "pinned": False}
        unpinned = await client.post("/api/memories", json=loose, headers=ALICE)
        pin_it = f"/api/memories/{unpinned.json()['data']['id']}"
        new = [{**loose, "text": f"고정 {n}", "pinned": True} for n in range(5)]
        answers = await asyncio.gather(
            client.patch(pin_it, json={"pinned": True}, headers=ALICE),
            *(client.post("/api/memories", json=body, headers=ALICE) for body in new),
        )
        pinned = [a for a in answers if a.status_code in (200, 201)]
        assert len(pinned) == 2, [a.text for a in answers]
        assert all(a.status_code == 409 for a in answers if a not in pinned)
        assert sum(m["pinned"] for m in await memories(client)) == 2


async def test_a_clients_conversation_is_read_and_learned(client, backend):
    turns = [{"role": "user", "content": "안녕 " + fact("user.team", "The user roots for Doosan")}]
    body: dict = {"character_id": "hermione", "tts_enabled": False}
    for text in ("두 번째", "세 번째"):
        body["messages"] = turns
        response = await client.post("/api/chat", json=body, headers=ALICE)
        assert response.status_code == 200, response.text
        body["session_id"] = response.json()["data"]["session_id"]
        turns = [*turns, {"role": "assistant", "content": response.json()["data"]["content"]}]
        turns.append({"role": "user", "content": text})
    [memory] = await learned(client, 1)
    assert memory["text"] == "The user roots for Doosan"
    assert memory["session_id"] == body["session_id"]


async def test_a_branch_that_says_otherwise_leaves_its_sources_fact_alone(client, backend):
    source = await start(client)
    first = await say(client, source, "안녕")
    await say(client, source, "이름 " + fact("user.name", "The user is called Minsu", "name"))
    await say(client, source, "Minsu 맞아")
    [minsu] = await learned(client, 1)
    branch = await branch_at(client, source, first["message_id"])
    await say(client, branch, "하나 " + fact("user.mood", "The user feels brave today"))
    await say(client, branch, "둘")
    await learned(client, 2)  # the branch's first reading
    await say(client, branch, "셋 " + fact("user.name", "The user is called Jisu", "name"))
    await say(client, branch, "넷")
    found = await learned(client, 3)  # its second: a memory of its own for the same slot
    assert {m["text"] for m in found} == {
        "The user is called Minsu",
        "The user feels brave today",
        "The user is called Jisu",
    }
    [kept] = [m for m in found if m["id"] == minsu["id"]]
    assert kept["text"] == "The user is called Minsu" and kept["session_id"] == source
    reply = await say(client, source, "Minsu?")
    assert "The user is called Minsu" in [m["text"] for m in reply["context"]["memories"]]
    assert "Jisu" not in last_system(backend)


async def test_a_lower_reading_mark_never_undoes_a_higher_one(client, redis):
    session = await start(client)
    await say(client, session, "하나")
    script = redis.register_script(SAVE_MARK)
    await script(keys=[f"chat:session:{session}"], args=[8, "d8", 12])
    await script(keys=[f"chat:session:{session}"], args=[4, "d4", 12])
    await script(keys=[f"chat:session:{session}"], args=[8, "d8b", 12])
    marks = json.loads(await redis.hget(f"chat:session:{session}", "memory_marks"))
    assert marks == [[4, "d4"], [8, "d8b"]]


# --- what is said while memory is read_only or off is flagged, never read ---------------------


def readings(backend: Backend) -> str:
    """Everything the memory's readings (and summaries with facts) were sent to read."""
    return "\n".join(
        p.messages_received[-1]["content"] for p in backend.recorder.prompts if p.format is not None
    )


async def read_then_read_only(client, backend: Backend) -> tuple[str, dict]:
    """A conversation whose first exchange was read (nothing to learn in it), its memory then
    set to read_only; and that first turn's answer."""
    session = await start(client)
    first = await say(client, session, "안녕")
    await say(client, session, "반가워")
    await idle(backend)
    await set_memory(client, session, "read_only")
    return session, first


async def learns_only_what_is_said_now(client, backend: Backend, session: str, unread: str) -> None:
    """With memory back on, a new fact is learned, and what `unread` names was never read."""
    await say(client, session, "이제 진짜 " + fact("user.pet", "The user has a parrot"))
    assert [m["text"] for m in await learned(client, 1)] == ["The user has a parrot"]
    await idle(backend)
    assert "parrot" in readings(backend) and unread not in readings(backend)


async def set_memory(client, session_id: str, mode: str) -> None:
    changed = await client.patch(
        f"/api/chat/sessions/{session_id}", json={"memory": mode}, headers=ALICE
    )
    assert changed.status_code == 200 and changed.json()["data"]["memory"] == mode


async def change_message(client, session_id: str, message_id: str, how: str) -> None:
    url = f"/api/chat/sessions/{session_id}/messages/{message_id}"
    if how == "edit":
        response = await client.patch(url, json={"content": "고쳐 쓴 인사"}, headers=ALICE)
    else:
        response = await client.delete(url, headers=ALICE)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["edit", "delete"])
async def test_an_edit_before_a_read_only_stretch_never_teaches_what_was_said_in_it(
    client, backend, how
):
    session, first = await read_then_read_only(client, backend)
    await say(client, session, "비밀 " + fact("user.job", "The user is an astronaut"))
    await say(client, session, "그냥 해 본 말")
    await set_memory(client, session, "on")
    # Before the read_only stretch: every reading mark past it is void.
    await change_message(client, session, first["user_message_id"], how)
    await learns_only_what_is_said_now(client, backend, session, "astronaut")
    assert [m["text"] for m in await memories(client)] == ["The user has a parrot"]


async def test_an_edit_written_while_memory_is_read_only_is_never_read(client, backend, redis):
    session, first = await read_then_read_only(client, backend)
    edited = await client.patch(
        f"/api/chat/sessions/{session}/messages/{first['user_message_id']}",
        json={"content": "비밀 " + fact("user.job", "The user is an astronaut")},
        headers=ALICE,
    )
    assert edited.status_code == 200, edited.text
    assert "unlearned" not in edited.json()["data"]
    await set_memory(client, session, "on")
    await learns_only_what_is_said_now(client, backend, session, "astronaut")
    raws = await redis.lrange(f"chat:session:{session}:messages", 0, -1)
    assert json.loads(raws[1]).get("unlearned") is True  # the edited user message


async def test_a_reply_regenerated_in_read_only_is_never_read(client, backend, redis):
    session, first = await read_then_read_only(client, backend)
    again = await client.post(
        f"/api/chat/sessions/{session}/regenerate",
        json={"temperature": 1.37, "tts_enabled": False},
        headers=ALICE,
    )
    assert again.status_code == 200, again.text
    assert "1.37" in again.json()["data"]["content"]  # the emulator says its temperature
    raws = await redis.lrange(f"chat:session:{session}:messages", 0, -1)
    flags = [bool(json.loads(raw).get("unlearned")) for raw in raws]
    assert flags == [False, False, False, False, True]  # the regenerated reply alone
    assert all("unlearned" not in m for m in await messages_of(client, session))
    await set_memory(client, session, "on")
    await change_message(client, session, first["user_message_id"], "edit")
    await learns_only_what_is_said_now(client, backend, session, "1.37")


async def test_a_branch_keeps_what_was_said_in_read_only_unread(client, backend):
    source = await start(client)
    await say(client, source, "안녕")
    await set_memory(client, source, "read_only")
    secret = await say(client, source, "비밀 " + fact("user.job", "The user is an astronaut"))
    branch = await branch_at(client, source, secret["message_id"])
    await set_memory(client, branch, "on")
    first = (await messages_of(client, branch))[1]
    assert first["content"] == "안녕"
    await change_message(client, branch, first["id"], "edit")
    await learns_only_what_is_said_now(client, backend, branch, "astronaut")


@pytest.mark.parametrize("greeting", ["kept", "deleted"])
async def test_a_summary_made_ahead_lists_no_facts_once_a_turn_was_said_in_read_only(
    app_client, redis_url, characters_url, greeting
):
    """Neither of the block said in read_only, nor of a later one, whose call sees the
    summary so far (with the greeting deleted, the read_only words open the first summary)."""
    async with summarizing_ahead(app_client, redis_url, characters_url) as (client, backend):
        session = await start(client, memory="read_only")
        if greeting == "deleted":
            opening = (await messages_of(client, session))[0]
            await change_message(client, session, opening["id"], "delete")
        await say(client, session, "안녕 " + fact("user.job", "The user is an astronaut"))
        await set_memory(client, session, "on")
        said = "I keep telling stories about the old library by the river. " * 12
        for n in range(8):
            await say(client, session, f"{n}: {said}")
        await idle(backend)
        found = await memories(client)
    summarized = [
        p.messages_received[-1]["content"]
        for p in backend.recorder.prompts
        if p.messages_received[0]["content"].startswith("You keep the memory of a long")
    ]
    assert any("astronaut" in prompt for prompt in summarized)  # its block was summarized
    assert "astronaut" not in readings(backend)  # without asking for its facts
    assert found == []


async def client_turn(client, body: dict, turns: list[dict], mode: str) -> list[dict]:
    """One turn of a client's conversation (it sends the whole history); the history with
    the reply."""
    body.update(messages=turns, memory=mode)
    response = await client.post("/api/chat", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    body["session_id"] = response.json()["data"]["session_id"]
    return [*turns, {"role": "assistant", "content": response.json()["data"]["content"]}]


async def test_a_stopped_stream_in_read_only_is_never_learned(
    redis_url, characters_url, backend_name
):
    with emulated_llm(backend_name, tokens_per_second=20) as slow:
        app = create_app(settings_for(redis_url, characters_url, slow))
        app.dependency_overrides[current_identity] = callers_from_test_headers
        # A real server: a client that stops a stream closes its connection.
        with serve_in_thread(app, lifespan="on") as url:
            async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as client:
                body: dict = {"character_id": "hermione", "tts_enabled": False}
                turns = await client_turn(client, body, [{"role": "user", "content": "안녕"}], "on")
                secret = {
                    "role": "user",
                    "content": "비밀 " + fact("user.job", "The user is an astronaut"),
                }
                shown = await stopped_after_a_delta(
                    client,
                    {**body, "messages": [*turns, secret], "memory": "read_only", "stream": True},
                )
                await idle(slow)  # the stopped turn recorded, its marks saved
                turns = [*turns, secret, {"role": "assistant", "content": shown}]
                now = {
                    "role": "user",
                    "content": "이제 " + fact("user.pet", "The user has a parrot"),
                }
                turns = await client_turn(client, body, [*turns, now], "on")
                await client_turn(
                    client, body, [*turns, {"role": "user", "content": "그리고"}], "on"
                )
                assert [m["text"] for m in await learned(client, 1)] == ["The user has a parrot"]
                await idle(slow)
    assert "parrot" in readings(slow) and "astronaut" not in readings(slow)


async def stopped_after_a_delta(client: httpx.AsyncClient, body: dict) -> str:
    """A streamed turn its client stops after the first delta; that delta's text."""
    async with client.stream("POST", "/api/chat", json=body, headers=ALICE) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line == "event: delta":
                return json.loads((await anext(lines)).removeprefix("data: "))["content"]
    raise AssertionError("the stream ended before a delta")


async def test_a_clients_read_only_turn_is_not_read_by_a_summary_made_ahead(
    app_client, redis_url, characters_url
):
    async with summarizing_ahead(app_client, redis_url, characters_url) as (client, backend):
        said = "I keep telling stories about the old library by the river. " * 12
        turns = [
            {"role": "user", "content": "비밀 " + fact("user.job", "The user is an astronaut")}
        ]
        body: dict = {"character_id": "hermione", "tts_enabled": False}
        turns = await client_turn(client, body, turns, "read_only")
        for n in range(8):
            turns = await client_turn(
                client, body, [*turns, {"role": "user", "content": f"{n}: {said}"}], "on"
            )
        await idle(backend)
        found = await memories(client)
    assert "astronaut" not in readings(backend)
    assert found == []


async def test_a_client_that_changes_its_history_never_has_its_read_only_turns_read(
    client, backend
):
    body: dict = {"character_id": "hermione", "tts_enabled": False}
    turns = await client_turn(client, body, [{"role": "user", "content": "안녕"}], "on")
    secret = {"role": "user", "content": "비밀 " + fact("user.job", "The user is an astronaut")}
    turns = await client_turn(client, body, [*turns, secret], "read_only")
    await idle(backend)  # its marks saved
    turns[0] = {"role": "user", "content": "고쳐 쓴 인사"}  # the client changes its first message
    now = {"role": "user", "content": "이제 " + fact("user.pet", "The user has a parrot")}
    turns = await client_turn(client, body, [*turns, now], "on")
    await client_turn(client, body, [*turns, {"role": "user", "content": "그리고"}], "on")
    assert [m["text"] for m in await learned(client, 1)] == ["The user has a parrot"]
    await idle(backend)
    assert "parrot" in readings(backend) and "astronaut" not in readings(backend)


async def test_a_reading_waits_while_the_users_calls_in_flight_are_at_their_cap(
    app_client, redis_url, characters_url, backend, redis
):
    """A memory reading is one of its caller's LLM calls (LLM_CALLS_PER_USER): while all of
    them are taken it is put off (the conversation read when quiet again), then learns."""
    settings = settings_for(
        redis_url, characters_url, backend, memory_idle_s=1, llm_calls_per_user=1
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with app_client(app) as client:

        async def skipped() -> float:
            text = (await client.get("/metrics")).text
            found = re.search(r'avatar_chat_memory_learning_total\{outcome="skipped"\} (\S+)', text)
            return float(found.group(1)) if found else 0.0

        session = await start(client)
        before = await skipped()
        await say(client, session, "잠깐 " + fact("user.city", "The user lives in Busan"))
        # Another call of hers in flight (another replica's turn, say): her one place is taken.
        await redis.zadd("chat:calls-of:alice", {"elsewhere": time.time() + 60})
        deadline = time.monotonic() + 20
        while await skipped() == before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        put_off = await skipped() > before
        nothing_yet = await memories(client)
        await redis.zrem("chat:calls-of:alice", "elsewhere")
        [memory] = await learned(client, 1)
    assert put_off and nothing_yet == []
    assert memory["text"] == "The user lives in Busan"
