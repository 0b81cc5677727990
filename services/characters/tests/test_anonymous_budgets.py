"""What anonymous users may keep (ids cost nothing): less per id than a signed-in user, a
budget per client address over all of its ids, and nothing kept past ANON_DATA_TTL_S of no use.
Callers here are who their anonymous cookie says (as through the gateway), from the address
the app sees; signed-in users speak through a second app over the same Redis."""

import asyncio
import json
import os
import time
from contextlib import asynccontextmanager

import pytest

from avatar_shared.identity import AnonymousIds
from avatar_shared.owned import RENEW_EVERY_S
from tests.helpers import as_user, returning_visitor

from .helpers import characters_app, persona
from .test_quotas import card_of

HOME, ELSEWHERE = "10.0.0.1", "10.0.0.2"
NEW = {"name": "익명의 캐릭터", "persona": "조용한 여행자."}
TTL = 24 * 3600


@asynccontextmanager
async def apps(app_client, redis_url, presets_file, **settings):
    """Clients from HOME and ELSEWHERE (anonymous by cookie) and a signed-in one, one store."""
    settings = {"anon_data_ttl_s": TTL, **settings}
    anonymous = characters_app(redis_url, presets_file, real_identity=True, **settings)
    signed_in = characters_app(redis_url, presets_file, **settings)
    async with (
        app_client(anonymous, address=HOME) as home,
        app_client(anonymous, address=ELSEWHERE) as elsewhere,
        app_client(signed_in) as accounts,
    ):
        yield home, elsewhere, accounts


async def create(client, path="/api/characters", body=None, headers=None):
    return await client.post(path, json=body or NEW, headers=headers or {})


async def test_an_anonymous_user_keeps_fewer_characters_than_a_signed_in_one(
    app_client, redis_url, presets_file
):
    async with apps(app_client, redis_url, presets_file, max_characters_per_anonymous_user=2) as (
        home,
        _,
        accounts,
    ):
        returning_visitor(home)
        made = [await create(home) for _ in range(2)]
        refused = await create(home)
        returning_visitor(home)  # another id at the same address still has its own quota
        other_id = await create(home)
        signed_in = [await create(accounts, headers=as_user("alice")) for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201] and other_id.status_code == 201
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "quota_exceeded"
    assert "anonymous" in refused.json()["error"]["message"]
    assert [r.status_code for r in signed_in] == [201, 201, 201]


async def test_anonymous_ids_of_one_address_share_its_character_count(
    app_client, redis_url, presets_file
):
    async with apps(
        app_client, redis_url, presets_file,
        max_characters_per_anonymous_user=2, max_characters_per_address=3,
    ) as (home, elsewhere, accounts):  # fmt: skip
        returning_visitor(home)
        made = [await create(home) for _ in range(2)]
        returning_visitor(home)
        third = await create(home)
        refused = [await create(home)]
        returning_visitor(home)  # a fresh id buys nothing more
        refused.append(await create(home))
        returning_visitor(elsewhere)
        other_address = await create(elsewhere)
        signed_in = await create(accounts, headers=as_user("alice"))
    assert [r.status_code for r in [*made, third]] == [201, 201, 201]
    assert [r.status_code for r in refused] == [409, 409]
    message = refused[0].json()["error"]["message"]
    assert "your network address keep 3 characters" in message and "sign in" in message
    assert other_address.status_code == 201 and signed_in.status_code == 201


async def test_ids_writing_at_once_still_share_the_address_count(
    app_client, redis_url, presets_file
):
    signer = AnonymousIds(os.environ["ANON_ID_SECRET"].encode())
    cookies = [signer.mint()[1] for _ in range(12)]
    async with apps(app_client, redis_url, presets_file, max_characters_per_address=5) as (
        home,
        _,
        _accounts,
    ):
        answers = await asyncio.gather(
            *(create(home, headers={"Cookie": f"anon_id={cookie}"}) for cookie in cookies)
        )
    assert sorted(a.status_code for a in answers) == [201] * 5 + [409] * 7


async def test_a_deleted_or_expired_character_gives_the_address_its_room_back(
    app_client, redis_url, redis, presets_file
):
    async with apps(app_client, redis_url, presets_file, max_characters_per_address=2) as (
        home,
        _,
        _accounts,
    ):
        returning_visitor(home)
        kept = (await create(home)).json()["data"]
        deleted = (await create(home)).json()["data"]
        full = await create(home)
        await home.delete(f"/api/characters/{deleted['id']}")
        after_delete = await create(home)
        returning_visitor(home)
        full_again = await create(home)
        # The first id's time is up: every key of its records expires, at once.
        ids = [kept["id"], after_delete.json()["data"]["id"]]
        for key in await anonymous_keys(redis, kept["owner"], *ids):
            if ":address:" not in key:
                await redis.pexpire(key, 1)
        await asyncio.sleep(0.01)
        after_expiry = await create(home)
    assert full.status_code == 409 and full_again.status_code == 409
    assert after_delete.status_code == 201 and after_expiry.status_code == 201


async def test_anonymous_ids_of_one_address_share_its_bytes(app_client, redis_url, presets_file):
    card = card_of(100_000)
    async with apps(
        app_client, redis_url, presets_file, max_character_bytes_per_address=450_000
    ) as (home, elsewhere, _):
        made = []
        for _ in range(4):  # four ids, one card each: the fourth no longer fits
            returning_visitor(home)
            made.append(await home.post("/api/characters/import", files={"file": ("c", card)}))
        returning_visitor(home)
        small = await create(home)  # a small one still fits
        grown = await home.patch(
            f"/api/characters/{small.json()['data']['id']}",
            json={"alternate_greetings": ["길" * 4000] * 20},  # 240 kB more
        )
        returning_visitor(elsewhere)
        other_address = await elsewhere.post("/api/characters/import", files={"file": ("c", card)})
    assert [r.status_code for r in made] == [201, 201, 201, 409]
    assert "450000 bytes of characters together" in made[3].json()["error"]["message"]
    assert small.status_code == 201
    assert grown.status_code == 409 and grown.json()["error"]["code"] == "quota_exceeded"
    assert other_address.status_code == 201


async def test_anonymous_personas_have_a_count_per_id_and_per_address(
    app_client, redis_url, presets_file
):
    async with apps(
        app_client, redis_url, presets_file,
        max_personas_per_anonymous_user=2, max_personas_per_address=3,
    ) as (home, elsewhere, accounts):  # fmt: skip
        returning_visitor(home)
        own = [await create(home, "/api/personas", persona()) for _ in range(3)]
        returning_visitor(home)
        second_id = [await create(home, "/api/personas", persona()) for _ in range(2)]
        returning_visitor(elsewhere)
        other_address = await create(elsewhere, "/api/personas", persona())
        signed_in = [
            await create(accounts, "/api/personas", persona(), as_user("bob")) for _ in range(3)
        ]
    assert [r.status_code for r in own] == [201, 201, 409]
    assert [r.status_code for r in second_id] == [201, 409]
    assert "address" in second_id[1].json()["error"]["message"]
    assert other_address.status_code == 201
    assert [r.status_code for r in signed_in] == [201, 201, 201]


async def anonymous_keys(redis, owner: str, *record_ids: str) -> list[str]:
    """Every key of `owner`'s records (the hourly marker apart), and for an anonymous owner
    those of the addresses' accounting."""
    keys = set(await redis.keys("*:address:addr:*")) if owner.startswith("anon-") else set()
    for kind in ("characters", "personas"):
        for part in (f"*:{owner}", *(f"*:{i}" for i in record_ids)):
            keys.update(await redis.keys(f"{kind}:{part}"))
    return sorted(key for key in keys if ":renewed:" not in key)  # the hourly marker


async def test_what_an_anonymous_user_keeps_expires_after_the_ttl_and_a_signed_in_users_not(
    app_client, redis_url, redis, presets_file
):
    async with apps(app_client, redis_url, presets_file) as (home, _, accounts):
        owner = returning_visitor(home)
        made = (await create(home)).json()["data"]
        imported = await home.post("/api/characters/import", files={"file": ("c", card_of(1000))})
        chosen = await create(home, "/api/personas", persona(is_default=True))
        ids = [made["id"], imported.json()["data"]["id"], chosen.json()["data"]["id"]]
        theirs = await anonymous_keys(redis, owner, *ids)
        ttls = {key: await redis.ttl(key) for key in theirs}
        kept = (await create(accounts, headers=as_user("alice"))).json()["data"]
        alices = await anonymous_keys(redis, "alice", kept["id"])
        alices_ttls = {key: await redis.ttl(key) for key in alices}
        until = await redis.zscore("budget:characters:until", owner)
        alices_until = await redis.zscore("budget:characters:until", "alice")
    kinds = {key.split(":")[1] for key in theirs}
    # records, cards, owner sets, counters, the default persona, the address's accounting
    assert {"item", "card", "owner", "bytes", "default", "address-of", "address"} <= kinds
    assert all(TTL < ttl <= TTL + RENEW_EVERY_S for ttl in ttls.values()), ttls
    assert alices_ttls and all(ttl == -1 for ttl in alices_ttls.values()), alices_ttls
    assert until is not None and abs(until - (time.time() + TTL + RENEW_EVERY_S)) < 60
    assert alices_until == float(
        "inf"
    )  # the budget gives a signed-in user's bytes back on delete only


async def test_a_read_renews_an_anonymous_users_data_at_most_once_an_hour(
    app_client, redis_url, redis, presets_file
):
    async with apps(app_client, redis_url, presets_file) as (home, _, _accounts):
        owner = returning_visitor(home)
        made = (await create(home)).json()["data"]
        keys = await anonymous_keys(redis, owner, made["id"])
        for key in keys:  # as if 13 days had gone by since
            await redis.expire(key, 100)
        await home.get("/api/characters")  # renewed within the hour already: left as is
        unchanged = [await redis.ttl(key) for key in keys]
        await redis.delete(f"characters:renewed:{owner}")  # as if the hour had gone by
        await home.get(f"/api/characters/{made['id']}")  # any read of its records renews
        renewed = [await redis.ttl(key) for key in keys]
    assert all(ttl <= 100 for ttl in unchanged)
    assert all(ttl > TTL for ttl in renewed), dict(zip(keys, renewed, strict=True))


async def test_a_full_characters_budget_refuses_new_characters_only(
    app_client, redis_url, redis, presets_file
):
    # 25% of 400 kB is the characters' share: about four of these cards.
    settings = {"redis_maxmemory": "400kb"}
    card = card_of(20_000)
    async with apps(app_client, redis_url, presets_file, **settings) as (home, _, accounts):
        users = [as_user(f"user{n}") for n in range(8)]
        made = [
            await accounts.post("/api/characters/import", files={"file": ("c", card)}, headers=u)
            for u in users
        ]
        refused = made[-1]
        returning_visitor(home)
        anonymous = await home.post("/api/characters/import", files={"file": ("c", card)})
        first = made[0].json()["data"]
        read = await accounts.get(f"/api/characters/{first['id']}")
        listed = await accounts.get("/api/characters", headers=users[0])
        personas = await create(accounts, "/api/personas", persona(), users[0])
        await accounts.delete(f"/api/characters/{first['id']}", headers=users[0])
        after_delete = await create(accounts, headers=users[0])
        used = int(await redis.get("budget:characters:total"))
    assert made[0].status_code == 201
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_full"
    assert "characters" in refused.json()["error"]["message"]
    assert anonymous.status_code == 503
    assert read.status_code == 200 and listed.json()["data"]["characters"][0] == first
    assert personas.status_code == 201  # another kind
    assert after_delete.status_code == 201
    assert used <= int(0.25 * 400 * 1024)


async def test_expired_anonymous_characters_give_the_budget_their_bytes_back(
    app_client, redis_url, redis, presets_file
):
    settings = {"redis_maxmemory": "400kb"}
    card = card_of(20_000)
    async with apps(app_client, redis_url, presets_file, **settings) as (home, _, accounts):
        owners, made = [], []
        for _ in range(8):
            owners.append(returning_visitor(home))
            made.append(await home.post("/api/characters/import", files={"file": ("c", card)}))
        full = made[-1]
        for owner in owners:  # their time is up, in Redis's keys and in the budget
            for key in await redis.keys(f"characters:*{owner}*"):
                await redis.delete(key)
            await redis.zadd("budget:characters:until", {owner: time.time() - 1}, xx=True)
        for key in await redis.keys("characters:item:*") + await redis.keys("characters:card:*"):
            await redis.delete(key)
        signed_in = await accounts.post(
            "/api/characters/import", files={"file": ("c", card)}, headers=as_user("alice")
        )
    assert full.status_code == 503
    assert signed_in.status_code == 201


async def test_byte_counters_missing_for_older_characters_are_counted_once(
    app_client, redis_url, redis, presets_file
):
    """Characters made before byte quotas have no counter: the next write counts them from
    the records (and the budget holds them), so the quota is the same as for newer ones."""
    app = characters_app(redis_url, presets_file, max_character_bytes_per_user=100_000)
    alice = as_user("alice")
    async with app_client(app) as characters:
        old = []
        for _ in range(2):
            made = await characters.post(
                "/api/characters/import", files={"file": ("c", card_of(20_000))}, headers=alice
            )
            old.append(made.json()["data"])
        expected = int(await redis.get("characters:bytes:alice"))
        await redis.delete("characters:bytes:alice", *await redis.keys("budget:*"))
        refused = await characters.post(
            "/api/characters/import", files={"file": ("c", card_of(20_000))}, headers=alice
        )
        counted = int(await redis.get("characters:bytes:alice"))
        held = int(await redis.get("budget:characters:total"))
        await characters.delete(f"/api/characters/{old[0]['id']}", headers=alice)
        after_delete = await characters.post(
            "/api/characters/import", files={"file": ("c", card_of(20_000))}, headers=alice
        )
    assert refused.status_code == 409 and "100000 bytes" in refused.json()["error"]["message"]
    assert counted == expected == held
    assert after_delete.status_code == 201


@pytest.mark.parametrize(
    "book",
    [
        {"extensions": {"\ud800": 1}, "entries": []},
        {"entries": [{"keys": ["k"], "extensions": {"x": "\udc00"}}]},
    ],
)
async def test_a_lone_surrogate_in_a_lorebooks_free_form_json_is_refused(characters, redis, book):
    """Where the schema takes any JSON (a lorebook's extensions), JSON's escapes can carry
    half of a UTF-16 pair, which no stored text can hold (was a 500)."""
    response = await characters.post(
        "/api/characters",
        content=json.dumps({**NEW, "lorebook": book}).encode(),
        headers={**as_user("alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "surrogate" in response.json()["error"]["message"]
    assert await redis.keys("characters:*") == []
