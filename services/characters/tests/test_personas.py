"""User personas (`/api/personas`): the caller's own, one default at most, under quotas."""

import asyncio

import pytest

from avatar_shared.peers import PeerClient, PeerRejected
from tests.helpers import as_user, returning_visitor

from .helpers import characters_app, every_page, persona

ALICE, BOB = as_user("alice"), as_user("bob")


async def make(client, headers=ALICE, **body) -> dict:
    made = await client.post("/api/personas", json=persona(**body), headers=headers)
    assert made.status_code == 201, made.text
    return made.json()["data"]


async def default_ids(client, headers=ALICE) -> list[str]:
    listed = (await client.get("/api/personas", headers=headers)).json()["data"]["personas"]
    return [p["id"] for p in listed if p["is_default"]]


async def test_create_read_list_replace_delete(characters, redis):
    made = await make(characters, description="  말수가 적다.  ")
    assert made["id"].startswith("per_") and made["owner"] == "alice"
    assert (made["name"], made["description"], made["is_default"]) == (
        "여행자",
        "말수가 적다.",
        False,
    )
    assert made["created_at"] == made["updated_at"]
    assert set(made) == {
        "id", "name", "description", "is_default", "owner", "created_at", "updated_at"
    }  # fmt: skip

    read = await characters.get(f"/api/personas/{made['id']}", headers=ALICE)
    listed = await characters.get("/api/personas", headers=ALICE)
    assert read.json() == {"success": True, "data": made}
    assert listed.json()["data"] == {"personas": [made], "next_cursor": None}

    await asyncio.sleep(0.002)  # timestamps are to the millisecond
    body = persona("기사", "왕국의 기사.")
    replaced = await characters.put(f"/api/personas/{made['id']}", json=body, headers=ALICE)
    assert replaced.status_code == 200, replaced.text
    changed = replaced.json()["data"]
    assert (changed["name"], changed["description"]) == ("기사", "왕국의 기사.")
    assert changed["created_at"] == made["created_at"] < changed["updated_at"]
    assert (await characters.get(f"/api/personas/{made['id']}", headers=ALICE)).json()[
        "data"
    ] == changed

    deleted = await characters.delete(f"/api/personas/{made['id']}", headers=ALICE)
    assert deleted.json() == {"success": True, "data": {"id": made["id"], "deleted": True}}
    gone = await characters.get(f"/api/personas/{made['id']}", headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "persona_not_found"
    again = await characters.delete(f"/api/personas/{made['id']}", headers=ALICE)
    assert again.status_code == 404
    assert (await characters.get("/api/personas", headers=ALICE)).json()["data"]["personas"] == []
    assert await redis.keys("personas:*") == []  # nothing left behind


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "description": "x"},
        {"name": "   ", "description": "x"},
        {"name": "가" * 101},
        {"name": "여행자", "description": "가" * 4001},
        {"description": "이름이 없다."},
        {"name": "여행자", "is_default": "yes"},
        {"name": "여행자", "is_default": 1},
        {"name": "여행자", "voice_id": "default"},
        {"name": 5},
    ],
)
async def test_invalid_bodies_are_422_and_store_nothing(characters, redis, body):
    refused = await characters.post("/api/personas", json=body, headers=ALICE)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "validation_error"
    made = await make(characters)
    replaced = await characters.put(f"/api/personas/{made['id']}", json=body, headers=ALICE)
    assert replaced.status_code == 422
    listed = (await characters.get("/api/personas", headers=ALICE)).json()["data"]["personas"]
    assert listed == [made]


async def test_the_longest_fields_are_taken(characters):
    made = await make(characters, name="가" * 100, description="나" * 4000, is_default=True)
    assert len(made["name"]) == 100 and len(made["description"]) == 4000 and made["is_default"]


async def test_another_callers_persona_is_not_found(characters):
    made = await make(characters, is_default=True)
    path = f"/api/personas/{made['id']}"
    answers = [
        await characters.get(path, headers=BOB),
        await characters.put(path, json=persona("도둑"), headers=BOB),
        await characters.delete(path, headers=BOB),
    ]
    missing = await characters.get("/api/personas/per_0000000000000000", headers=BOB)
    for answer in answers:
        assert answer.status_code == 404
        error = answer.json()["error"]
        assert error["code"] == "persona_not_found" == missing.json()["error"]["code"]
        assert error["message"].replace(made["id"], "…") == missing.json()["error"][
            "message"
        ].replace("per_0000000000000000", "…")  # the same answer as an id no one has
    assert (await characters.get("/api/personas", headers=BOB)).json()["data"]["personas"] == []
    assert (await characters.get(path, headers=ALICE)).json()["data"] == made  # untouched


async def test_one_default_at_a_time(characters, redis):
    first = await make(characters, name="첫째", is_default=True)
    second = await make(characters, name="둘째", is_default=True)
    third = await make(characters, name="셋째")  # not the default when left out
    bobs = await make(characters, headers=BOB, is_default=True)
    assert third["is_default"] is False
    assert await default_ids(characters) == [second["id"]]
    one = await characters.get(f"/api/personas/{first['id']}", headers=ALICE)
    assert one.json()["data"]["is_default"] is False

    body = persona("첫째", is_default=True)
    chosen = await characters.put(f"/api/personas/{first['id']}", json=body, headers=ALICE)
    assert chosen.json()["data"]["is_default"] is True
    assert await default_ids(characters) == [first["id"]]

    # A PUT that leaves is_default out changes neither the default nor the others.
    kept = await characters.put(f"/api/personas/{first['id']}", json=persona("1"), headers=ALICE)
    other = await characters.put(f"/api/personas/{third['id']}", json=persona("3"), headers=ALICE)
    assert (kept.json()["data"]["is_default"], other.json()["data"]["is_default"]) == (True, False)
    assert await default_ids(characters) == [first["id"]]

    body = persona("1", is_default=False)
    given_up = await characters.put(f"/api/personas/{first['id']}", json=body, headers=ALICE)
    assert given_up.json()["data"]["is_default"] is False
    assert await default_ids(characters) == []
    # Giving up a default one does not have leaves the real one alone.
    await characters.put(
        f"/api/personas/{second['id']}", json=persona(is_default=True), headers=ALICE
    )
    body = persona(is_default=False)
    await characters.put(f"/api/personas/{third['id']}", json=body, headers=ALICE)
    assert await default_ids(characters) == [second["id"]]

    await characters.delete(f"/api/personas/{second['id']}", headers=ALICE)
    assert await default_ids(characters) == []
    assert await redis.get("personas:default:alice") is None  # deleted with its persona
    assert await default_ids(characters, BOB) == [bobs["id"]]  # each caller has their own


async def test_the_callers_default_is_read_at_default(characters):
    none = await characters.get("/api/personas/default", headers=ALICE)
    assert none.status_code == 404 and none.json()["error"]["code"] == "no_default_persona"
    await make(characters, name="첫째")
    chosen = await make(characters, name="둘째", is_default=True)
    await make(characters, headers=BOB, name="밥", is_default=True)
    read = await characters.get("/api/personas/default", headers=ALICE)
    assert read.json() == {"success": True, "data": chosen}  # the caller's, not another's
    await characters.delete(f"/api/personas/{chosen['id']}", headers=ALICE)
    gone = await characters.get("/api/personas/default", headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_default_persona"


async def test_put_takes_back_the_object_get_answered(characters):
    """A client edits what GET answered and sends it whole: the read-only keys are ignored
    (not 422), `is_default` is written, and an unknown key is still 422."""
    made = await make(characters, name="여행자")
    path = f"/api/personas/{made['id']}"
    sent = {
        **made,
        "id": "per_other",
        "owner": "mallory",
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "name": "기사",
        "is_default": True,
    }
    replaced = await characters.put(path, json=sent, headers=ALICE)
    assert replaced.status_code == 200, replaced.text
    changed = replaced.json()["data"]
    assert (changed["id"], changed["owner"], changed["created_at"]) == (
        made["id"],
        "alice",
        made["created_at"],
    )
    assert (changed["name"], changed["is_default"]) == ("기사", True)
    assert changed["updated_at"] != sent["updated_at"]
    unknown = await characters.put(path, json={**made, "color": "red"}, headers=ALICE)
    assert unknown.status_code == 422
    wrong_type = await characters.put(path, json={**made, "owner": 7}, headers=ALICE)
    assert wrong_type.status_code == 422


async def test_concurrent_choices_leave_exactly_one_default(characters):
    made = [await make(characters, name=f"#{index}") for index in range(12)]
    await asyncio.gather(
        *(
            characters.put(f"/api/personas/{p['id']}", json=persona(is_default=True), headers=ALICE)
            for p in made
        )
    )
    assert len(await default_ids(characters)) == 1


async def test_a_user_keeps_at_most_their_count(app_client, redis_url, redis, presets_file):
    app = characters_app(redis_url, presets_file, max_personas_per_user=3)
    async with app_client(app) as characters:
        made = [await make(characters) for _ in range(3)]
        keys_before = sorted(await redis.keys("personas:*"))
        refused = await characters.post("/api/personas", json=persona(), headers=ALICE)
        keys_after = sorted(await redis.keys("personas:*"))
        others = await characters.post("/api/personas", json=persona(), headers=BOB)
        await characters.delete(f"/api/personas/{made[0]['id']}", headers=ALICE)
        again = await characters.post("/api/personas", json=persona(), headers=ALICE)
        listed = await characters.get("/api/personas", headers=ALICE)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "3 personas" in refused.json()["error"]["message"]
    assert keys_after == keys_before  # nothing stored
    assert others.status_code == 201 and again.status_code == 201
    assert len(listed.json()["data"]["personas"]) == 3


async def test_a_user_keeps_at_most_their_bytes(app_client, redis_url, redis, presets_file):
    app = characters_app(redis_url, presets_file, max_persona_bytes_per_user=20_000)
    async with app_client(app) as characters:
        big = await make(characters, description="가" * 4000)  # about 12 kB in UTF-8
        used = int(await redis.get("personas:bytes:alice"))
        refused = await characters.post(
            "/api/personas", json=persona(description="나" * 4000), headers=ALICE
        )
        small = await make(characters, description="짧다.")
        body = persona(description="다" * 4000)
        grown = await characters.put(f"/api/personas/{small['id']}", json=body, headers=ALICE)
        still = await characters.get(f"/api/personas/{small['id']}", headers=ALICE)
        await characters.delete(f"/api/personas/{big['id']}", headers=ALICE)
        await characters.delete(f"/api/personas/{small['id']}", headers=ALICE)
        left = await redis.keys("personas:*")
    assert 12_000 < used < 20_000
    assert [refused.status_code, grown.status_code] == [409, 409]
    assert refused.json()["error"]["code"] == grown.json()["error"]["code"] == "quota_exceeded"
    assert "20000 bytes" in refused.json()["error"]["message"]
    assert still.json()["data"] == small  # the refused change changed nothing
    assert left == []  # the byte count is given back to zero and dropped


async def test_pages_go_through_every_persona_newest_first(app_client, redis_url, presets_file):
    async with app_client(characters_app(redis_url, presets_file)) as characters:
        made = [await make(characters, name=f"#{index}") for index in range(7)]
        await make(characters, headers=BOB)
        pages = await every_page(characters, "/api/personas", "personas", ALICE, limit=3)
        bad = await characters.get("/api/personas?cursor=nope", headers=ALICE)
        too_many = await characters.get("/api/personas?limit=201", headers=ALICE)
    assert [len(page) for page in pages] == [3, 3, 1]
    names = [p["name"] for page in pages for p in page]
    assert names == [p["name"] for p in reversed(made)]
    assert [bad.status_code, too_many.status_code] == [422, 422]


async def test_chat_reads_a_persona_with_the_callers_forwarded_credentials(
    app_client, redis_url, presets_file
):
    """As chat does: a GET with the caller's `Identity.forward_headers` (here an anonymous
    caller's cookie; a signed-in one's is `Authorization: Bearer <token>`) is the caller's
    read; without them it is a stranger's."""
    app = characters_app(redis_url, presets_file, real_identity=True)
    async with app_client(app) as browser, app_client(app) as chat_http:
        anon_id = returning_visitor(browser)
        made = (await browser.post("/api/personas", json=persona())).json()["data"]
        cookie = {"Cookie": f"anon_id={browser.cookies['anon_id']}"}
        peer = PeerClient(chat_http, "characters", "")
        read = await peer.get(f"/api/personas/{made['id']}", headers=cookie)
        with pytest.raises(PeerRejected) as stranger:
            await peer.get(f"/api/personas/{made['id']}")
    assert made["owner"] == anon_id and read == made
    assert (stranger.value.status_code, stranger.value.code) == (404, "persona_not_found")
