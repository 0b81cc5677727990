"""A character edited or deleted in the characters service reaches chat's next turn, though
chat caches characters: characters announces the change over Redis (avatar_shared.changes)
and chat drops its copy. The cache's TTL is an hour here, so only the announcement explains a
turn that sees the change."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from avatar_characters.app import create_app as characters_app
from avatar_characters.settings import CharactersSettings
from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators.server import serve_in_thread
from avatar_shared.changes import CHARACTERS_CHANGED
from avatar_shared.identity import current_identity

from .helpers import Backend, as_signed_in, callers_from_test_headers

ALICE = as_signed_in("alice", "10.0.0.1")
TRIES = 200  # turns a change may take to reach chat before the test fails


@pytest.fixture
def characters_url(redis_url: str) -> Iterator[str]:
    characters = characters_app(CharactersSettings(redis_url=redis_url))
    characters.dependency_overrides[current_identity] = callers_from_test_headers
    with serve_in_thread(characters, lifespan="on") as url:
        yield url


@pytest.fixture
async def clients(
    app_client, redis, redis_url, backend: Backend, characters_url
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = ChatSettings(
        redis_url=redis_url,
        characters_url=characters_url,
        tts_url=f"http://127.0.0.1:{free_port()}",
        chat_rate_per_min=10_000,
        character_cache_s=3600,
        **backend.settings,
    )
    app = create_app(settings)
    app.dependency_overrides[current_identity] = callers_from_test_headers
    async with (
        app_client(app) as chat,
        httpx.AsyncClient(base_url=characters_url, trust_env=False) as characters,
    ):
        # Chat follows the channel before the test caches anything (an event sent earlier
        # reaches no one, and the subscription itself empties the cache).
        await subscribed(redis)
        yield chat, characters


async def subscribed(redis) -> None:
    for _ in range(TRIES):
        if (await redis.pubsub_numsub(CHARACTERS_CHANGED))[0][1]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("chat never subscribed to character changes")


async def turn(chat: httpx.AsyncClient, character_id: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], "character_id": character_id}
    return await chat.post("/api/chat", json={**body, "tts_enabled": False}, headers=ALICE)


def system_prompt(backend: Backend) -> str:
    return backend.recorder.last.messages_received[0]["content"]


async def make_character(characters: httpx.AsyncClient) -> str:
    made = await characters.post(
        "/api/characters", json={"name": "Bard", "persona": "OLD persona"}, headers=ALICE
    )
    assert made.status_code == 201, made.text
    return made.json()["data"]["id"]


async def edit_reaches_chat(chat, characters, backend, character_id: str) -> None:
    edited = await characters.patch(
        f"/api/characters/{character_id}", json={"persona": "NEW persona"}, headers=ALICE
    )
    assert edited.status_code == 200, edited.text
    # The event is handled by chat's listener task: a turn or two may come before it.
    for _ in range(TRIES):
        assert (await turn(chat, character_id)).status_code == 200
        if "NEW persona" in system_prompt(backend):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("chat kept playing the character as it was before the edit")
    assert "OLD persona" not in system_prompt(backend)


async def test_an_edited_character_is_played_as_edited_at_the_next_turns(clients, backend):
    chat, characters = clients
    character_id = await make_character(characters)
    assert (await turn(chat, character_id)).status_code == 200
    assert "OLD persona" in system_prompt(backend)  # now in chat's cache

    await edit_reaches_chat(chat, characters, backend, character_id)

    book = {"entries": [{"keys": ["hi"], "content": "LORE OF THE BARD", "constant": True}]}
    put = await characters.put(f"/api/characters/{character_id}/lorebook", json=book, headers=ALICE)
    assert put.status_code == 200, put.text
    for _ in range(TRIES):
        assert (await turn(chat, character_id)).status_code == 200
        if any("LORE OF THE BARD" in m["content"] for m in backend.recorder.last.messages_received):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("chat kept playing the character without its new lorebook")


async def test_a_deleted_character_is_not_found_by_the_next_turns(clients, backend):
    chat, characters = clients
    character_id = await make_character(characters)
    assert (await turn(chat, character_id)).status_code == 200
    missing = await turn(chat, "usr_0000000000000000")
    assert missing.status_code == 404, missing.text

    deleted = await characters.delete(f"/api/characters/{character_id}", headers=ALICE)
    assert deleted.status_code == 200, deleted.text
    for _ in range(TRIES):
        answer = await turn(chat, character_id)
        if answer.status_code != 200:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("chat kept playing a deleted character")
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == missing.json()["error"]["code"]
    # A memory of it is refused as one of a character that never was.
    memory = {"character_id": character_id, "text": "Likes lutes."}
    remembered = await chat.post("/api/memories", json=memory, headers=ALICE)
    assert remembered.status_code == 404, remembered.text


async def test_chat_follows_the_changes_again_after_redis_dropped_its_subscription(
    clients, backend, redis
):
    chat, characters = clients
    character_id = await make_character(characters)
    assert (await turn(chat, character_id)).status_code == 200
    assert await redis.client_kill_filter(_type="pubsub") == 1
    await subscribed(redis)

    await edit_reaches_chat(chat, characters, backend, character_id)
