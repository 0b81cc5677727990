"""Signing in keeps what the browser made (avatar_shared.adoption): the peer call
`POST /internal/accounts/adopt` moves an anonymous id's characters and personas to an account,
under the account's quotas, once, and only when a service of ours signed it.

Anonymous callers are who their cookie says (as through the gateway); signed-in ones speak
through a second app over the same Redis (`as_user`). Auth's side, and the whole sign-in
through the gateway, are tested in services/auth/tests/test_adoption.py and
tests/e2e/test_sign_in.py."""

import asyncio
from contextlib import asynccontextmanager

import pytest

from avatar_characters.errors import CharacterNotFound
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore
from avatar_shared.adoption import ADOPT_PATH
from avatar_shared.owned import Owner
from tests.helpers import NOT_A_PEER, as_user, peer_signer, returning_visitor, signed_adoption

from .helpers import characters_app, persona
from .test_quotas import card_of

SIGNER = peer_signer()
ALICE, BOB = as_user("alice"), as_user("bob")


@asynccontextmanager
async def apps(app_client, redis_url, presets_file, **settings):
    """An anonymous browser (by its cookie) and signed-in users, over one store."""
    anonymous = characters_app(redis_url, presets_file, real_identity=True, **settings)
    signed_in = characters_app(redis_url, presets_file, **settings)
    async with app_client(anonymous) as browser, app_client(signed_in) as accounts:
        yield browser, accounts


async def adopt(client, from_id: str, to: str, headers: dict | None = None):
    """The call auth makes at a sign-in, signed as auth signs it unless `headers` say."""
    sent = signed_adoption(SIGNER, from_id, to) if headers is None else headers
    return await client.post(ADOPT_PATH, json={"from": from_id, "to": to}, headers=sent)


async def make(client, path: str, body: dict, headers: dict | None = None) -> dict:
    made = await client.post(path, json=body, headers=headers or {})
    assert made.status_code == 201, made.text
    return made.json()["data"]


def character(name: str) -> dict:
    return {"name": name, "persona": "숲의 수호자."}


async def listed(client, path: str, key: str, headers: dict | None = None) -> list[dict]:
    answer = await client.get(path, headers=headers or {})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"][key]


async def test_a_browsers_characters_and_personas_become_the_accounts(
    app_client, redis_url, redis, presets_file
):
    async with apps(app_client, redis_url, presets_file) as (browser, accounts):
        anon_id = returning_visitor(browser)
        first = await make(browser, "/api/characters", character("첫째"))
        imported = await browser.post(
            "/api/characters/import", files={"file": ("c", card_of(5000))}
        )
        chosen = await make(browser, "/api/personas", persona("나", is_default=True))
        answer = await adopt(browser, anon_id, "alice")
        alices = await listed(accounts, "/api/characters", "characters", ALICE)
        alices_personas = await listed(accounts, "/api/personas", "personas", ALICE)
        left = await listed(browser, "/api/characters", "characters")
        left_personas = await listed(browser, "/api/personas", "personas")
        edit = await accounts.patch(
            f"/api/characters/{first['id']}", json={"name": "바뀐"}, headers=ALICE
        )
        by_the_browser = await browser.delete(f"/api/characters/{first['id']}")
        ttls = [
            await redis.ttl(key)
            for key in (
                f"characters:item:{first['id']}",
                f"characters:card:{imported.json()['data']['id']}",
                f"personas:item:{chosen['id']}",
                "characters:owner:alice",
                "personas:default:alice",
            )
        ]
        held = await redis.hgetall("budget:characters:held")
        until = await redis.zscore("budget:characters:until", "alice")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "success": True,
        "data": {"characters": {"moved": 2, "kept": 0}, "personas": {"moved": 1, "kept": 0}},
    }
    # Newest first, as before, with the same ids: links and chats to them go on.
    assert [c["id"] for c in alices] == [imported.json()["data"]["id"], first["id"]]
    assert {c["owner"] for c in alices} == {"alice"}
    assert [(p["id"], p["owner"], p["is_default"]) for p in alices_personas] == [
        (chosen["id"], "alice", True)
    ]
    assert left == [] and left_personas == []
    assert edit.status_code == 200
    assert by_the_browser.status_code == 403  # no longer the anonymous id's
    assert ttls == [-1] * 5  # kept until deleted, as every account's data
    assert set(held) == {"alice"} and until == float("inf")


async def test_a_second_call_moves_nothing_more(app_client, redis_url, presets_file):
    async with apps(app_client, redis_url, presets_file) as (browser, accounts):
        anon_id = returning_visitor(browser)
        for name in ("하나", "둘"):
            await make(browser, "/api/characters", character(name))
        once = await adopt(browser, anon_id, "alice")
        again = await adopt(browser, anon_id, "alice")
        elsewhere = await adopt(browser, anon_id, "bob")  # nothing of the id's is left
        alices = await listed(accounts, "/api/characters", "characters", ALICE)
        bobs = await listed(accounts, "/api/characters", "characters", BOB)
    assert once.json()["data"]["characters"] == {"moved": 2, "kept": 0}
    nothing = {"characters": {"moved": 0, "kept": 0}, "personas": {"moved": 0, "kept": 0}}
    assert again.json()["data"] == nothing and elsewhere.json()["data"] == nothing
    assert len(alices) == 2 and bobs == []


async def test_calls_racing_move_each_record_once(app_client, redis_url, presets_file):
    async with apps(app_client, redis_url, presets_file) as (browser, accounts):
        anon_id = returning_visitor(browser)
        for index in range(8):
            await make(browser, "/api/characters", character(f"#{index}"))
        answers = await asyncio.gather(*(adopt(browser, anon_id, "alice") for _ in range(4)))
        alices = await listed(accounts, "/api/characters?limit=50", "characters", ALICE)
    assert sum(a.json()["data"]["characters"]["moved"] for a in answers) == 8
    assert len({c["id"] for c in alices}) == len(alices) == 8


async def test_what_does_not_fit_the_accounts_quotas_stays_anonymous(
    app_client, redis_url, redis, presets_file
):
    quotas = {"max_characters_per_user": 3, "max_personas_per_user": 1}
    async with apps(app_client, redis_url, presets_file, **quotas) as (browser, accounts):
        await make(accounts, "/api/characters", character("원래"), ALICE)
        await make(accounts, "/api/personas", persona("원래", is_default=True), ALICE)
        anon_id = returning_visitor(browser)
        made = [await make(browser, "/api/characters", character(f"#{i}")) for i in range(3)]
        anon_persona = await make(browser, "/api/personas", persona("익명", is_default=True))
        answer = await adopt(browser, anon_id, "alice")
        alices = await listed(accounts, "/api/characters", "characters", ALICE)
        alices_personas = await listed(accounts, "/api/personas", "personas", ALICE)
        left = await listed(browser, "/api/characters", "characters")
        left_personas = await listed(browser, "/api/personas", "personas")
        left_ttl = await redis.ttl(f"characters:item:{made[2]['id']}")
        full = await accounts.post("/api/characters", json=character("더"), headers=ALICE)
    assert answer.json()["data"] == {
        "characters": {"moved": 2, "kept": 1},
        "personas": {"moved": 0, "kept": 1},
    }
    # The oldest moved; the newest stayed the anonymous id's, still expiring.
    assert {c["id"] for c in alices} >= {made[0]["id"], made[1]["id"]} and len(alices) == 3
    assert [c["id"] for c in left] == [made[2]["id"]] and left[0]["owner"] == anon_id
    assert left_ttl > 0
    assert [p["is_default"] for p in left_personas] == [True]
    assert left_personas[0]["id"] == anon_persona["id"]
    assert [(p["name"], p["is_default"]) for p in alices_personas] == [("원래", True)]
    assert full.status_code == 409  # moved records count in the account's quota


async def test_a_record_past_the_accounts_bytes_stays_and_a_smaller_one_moves(
    app_client, redis_url, presets_file
):
    async with apps(app_client, redis_url, presets_file, max_character_bytes_per_user=60_000) as (
        browser,
        accounts,
    ):
        anon_id = returning_visitor(browser)
        big = await browser.post("/api/characters/import", files={"file": ("c", card_of(70_000))})
        small = await make(browser, "/api/characters", character("작은"))
        answer = await adopt(browser, anon_id, "alice")
        alices = await listed(accounts, "/api/characters", "characters", ALICE)
        left = await listed(browser, "/api/characters", "characters")
    assert big.status_code == 201
    assert answer.json()["data"]["characters"] == {"moved": 1, "kept": 1}
    assert [c["id"] for c in alices] == [small["id"]]
    assert [c["id"] for c in left] == [big.json()["data"]["id"]]


async def test_only_the_named_anonymous_ids_data_moves(app_client, redis_url, presets_file):
    async with apps(app_client, redis_url, presets_file) as (browser, accounts):
        bobs = await make(accounts, "/api/characters", character("밥의 것"), BOB)
        other_id = returning_visitor(browser)
        others = await make(browser, "/api/characters", character("남의 것"))
        anon_id = returning_visitor(browser)
        mine = await make(browser, "/api/characters", character("내 것"))
        await adopt(browser, anon_id, "alice")
        alices = await listed(accounts, "/api/characters", "characters", ALICE)
        still_bobs = await listed(accounts, "/api/characters", "characters", BOB)
        browser.cookies.clear()
        still_others = await browser.get(f"/api/characters/{others['id']}")
    assert [c["id"] for c in alices] == [mine["id"]]
    assert [c["id"] for c in still_bobs] == [bobs["id"]]
    assert still_others.json()["data"]["owner"] == other_id


async def test_moving_gives_the_browsers_address_its_room_back(app_client, redis_url, presets_file):
    async with apps(app_client, redis_url, presets_file, max_characters_per_address=2) as (
        browser,
        _accounts,
    ):
        anon_id = returning_visitor(browser)
        for name in ("하나", "둘"):
            await make(browser, "/api/characters", character(name))
        full = await browser.post("/api/characters", json=character("셋"))
        await adopt(browser, anon_id, "alice")
        returning_visitor(browser)  # signed out, the browser is anonymous again
        after = await browser.post("/api/characters", json=character("셋"))
    assert full.status_code == 409 and after.status_code == 201


@pytest.mark.parametrize("case", NOT_A_PEER)
async def test_only_a_peer_may_call_it(app_client, redis_url, presets_file, case):
    async with apps(app_client, redis_url, presets_file) as (browser, _accounts):
        anon_id = returning_visitor(browser)
        made = await make(browser, "/api/characters", character("지킬 것"))
        headers = NOT_A_PEER[case](anon_id, browser.cookies["anon_id"])
        refused = await adopt(browser, anon_id, "mallory", headers=headers)
        still = await listed(browser, "/api/characters", "characters")
        signed = await adopt(browser, anon_id, "mallory")  # the same call, signed: it moves
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "not_a_peer"
    assert [c["id"] for c in still] == [made["id"]]
    assert signed.json()["data"]["characters"] == {"moved": 1, "kept": 0}


@pytest.mark.parametrize(
    "body",
    [
        {"from": "alice", "to": "bob"},  # an account's data never moves
        {"from": "anon-x", "to": "anon-y"},  # nor to another anonymous id
        {"from": "anon-shared-x", "to": "bob"},  # an address's shared id keeps nothing
        {"from": "anon-x"},
        {"from": "anon-x", "to": "bob", "and": "more"},
    ],
)
async def test_a_body_that_is_no_adoption_is_422(characters, body):
    refused = await characters.post(ADOPT_PATH, json=body)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"


async def test_the_call_is_in_no_openapi_document(characters):
    document = (await characters.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if "internal" in path]


async def test_a_delete_racing_a_sign_in_leaves_the_account_whole(redis, redis_url):
    """The delete checks the owner, then its script deletes: a sign-in moving the record in
    between made the script delete the account's record and leave its id and bytes counted
    in the account (a ghost in every listing and quota)."""
    store = CharacterStore(redis, CharactersSettings(redis_url=redis_url))
    record = await store.create(Owner("anon-1", "addr:127.0.0.1"), character("러너"))
    checked = store.owned

    async def checked_then_signed_in(record_id: str, user_id: str) -> dict:
        found = await checked(record_id, user_id)
        await store.adopt("anon-1", "account-1")  # the sign-in lands here
        return found

    store.owned = checked_then_signed_in  # type: ignore[method-assign]
    with pytest.raises(CharacterNotFound):  # as for any record that is not there
        await store.delete(record["id"], Owner("anon-1", "addr:127.0.0.1"))
    size = await redis.strlen(store.item_key(record["id"]))
    assert await redis.zrange(store.owner_key("account-1"), 0, -1) == [record["id"]]
    assert size > 0 and int(await redis.get(store.bytes_key("account-1"))) == size
