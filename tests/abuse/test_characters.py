"""Characters against a hostile client (issue 25, item 1): anonymous ids cost one request, so
what they may store is counted per client address too; a card is at most a megabyte of JSON;
and a kind of data that fills its share of Redis refuses new data of that kind only.
Addresses 127.0.30-39.x are this module's."""

import json
from collections.abc import Iterator

import pytest

from avatar_devstack.stack import Stack
from tests.helpers import client_from, own_stack

DEFAULT_ADDRESS_BYTES = 10_000_000  # MAX_CHARACTER_BYTES_PER_ADDRESS


def card(bulk_chars: int) -> bytes:
    """A Character Card V3 of about `bulk_chars` bytes of JSON (the bulk in an extension)."""
    data = {
        "name": "Bulk",
        "description": "A card made large.",
        "extensions": {"b": "x" * bulk_chars},
    }
    return json.dumps({"spec": "chara_card_v3", "spec_version": "3.0", "data": data}).encode()


async def import_card(client, content: bytes):
    return await client.post("/api/characters/import", files={"file": ("card.json", content)})


async def test_many_anonymous_ids_of_one_address_share_its_bytes(abuse_stack):
    big = card(950_000)  # four fit in one id's 5 MB, ten in the address's 10 MB
    statuses, refusal = [], None
    async with client_from(abuse_stack.gateway_url, "127.0.30.1") as attacker:
        for index in range(12):
            if index % 4 == 0:
                attacker.cookies.clear()  # a fresh anonymous id
            answer = await import_card(attacker, big)
            statuses.append(answer.status_code)
            if answer.status_code != 201 and refusal is None:
                refusal = answer.json()["error"]
    async with client_from(abuse_stack.gateway_url, "127.0.30.2") as neighbour:
        theirs = await import_card(neighbour, big)
    assert statuses == [201] * 10 + [409] * 2
    assert refusal is not None and refusal["code"] == "quota_exceeded"
    assert f"{DEFAULT_ADDRESS_BYTES} bytes of characters together" in refusal["message"]
    assert theirs.status_code == 201, theirs.text  # another address still may


async def test_a_card_of_more_than_a_megabyte_of_json_is_refused(abuse_stack):
    async with client_from(abuse_stack.gateway_url, "127.0.30.3") as client:
        refused = await import_card(client, card(1_100_000))
        listed = await client.get("/api/characters")
    # The service's own 413, through the gateway unchanged: its code, and a message that says
    # what is taken (the gateway's own 413 is only for a body past MAX_REQUEST_BODY_BYTES).
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "card_too_large"
    assert "at most 1000000 are taken" in refused.json()["error"]["message"]
    assert listed.json()["data"]["characters"] == []


@pytest.fixture(scope="module")
def small_redis() -> Iterator[Stack]:
    """A stack whose Redis may use 8 MB: the characters' share (25%) is about 2 MB."""
    with own_stack("small-redis", {"REDIS_MAXMEMORY": "8mb"}) as stack:
        yield stack


async def test_a_full_characters_budget_refuses_new_characters_and_chat_goes_on(small_redis):
    big = card(950_000)
    async with client_from(small_redis.gateway_url, "127.0.31.1") as first:
        kept = await import_card(first, big)
        await import_card(first, big)
    async with client_from(small_redis.gateway_url, "127.0.31.2") as other:
        refused = await import_card(other, big)
        read = await other.get(f"/api/characters/{kept.json()['data']['id']}")
        persona = await other.post("/api/personas", json={"name": "여행자"})
        chat = await other.post(
            "/api/chat",
            json={
                "messages": [{"role": "user", "content": "안녕"}],
                "character_id": kept.json()["data"]["id"],
            },
        )
        preset_chat = await other.post(
            "/api/chat",
            json={"messages": [{"role": "user", "content": "안녕"}], "character_id": "hermione"},
        )
    assert kept.status_code == 201, kept.text
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "storage_full"
    assert read.status_code == 200
    assert persona.status_code == 201, persona.text  # another kind of data
    assert chat.status_code == 200, chat.text
    assert preset_chat.status_code == 200, preset_chat.text
