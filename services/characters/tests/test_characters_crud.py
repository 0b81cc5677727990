"""Presets, user characters and their owners, validation and listing."""

import asyncio
import json
import os
import time

import pytest
from redis import Redis as SyncRedis

from avatar_characters.app import create_app
from avatar_characters.presets import PresetError
from avatar_characters.settings import CharactersSettings
from avatar_characters.store import CharacterStore
from avatar_shared.owned import Owner
from tests.helpers import as_user

ALICE, BOB = as_user("alice"), as_user("bob")
NEW = {"name": "나만의 캐릭터", "persona": "조용하고 다정한 도서관 사서.", "tags": ["태그1"]}


async def test_presets_are_complete_and_distinct(characters):
    presets = (await characters.get("/api/characters/presets")).json()["data"]["characters"]
    assert len(presets) >= 6
    assert len({p["voice_id"] for p in presets}) == len(presets)
    hermione = next(p for p in presets if p["id"] == "hermione")
    assert hermione["name"] == "헤르미온느 그레인저" and hermione["category"] == "소설"
    assert hermione["tags"] == ["해리포터", "마법사", "똑똑함"]
    assert hermione["image_url"] == "/images/characters/hermione.jpg"
    for preset in presets:
        assert preset["is_preset"] is True and preset["sample_dialogue"] and preset["persona"]


async def test_presets_follow_the_file_without_a_restart(characters, presets_file):
    data = json.loads(presets_file.read_text())
    data["characters"][0]["name"] = "헤르미온느 (개정판)"
    presets_file.write_text(json.dumps(data, ensure_ascii=False))
    os.utime(presets_file, ns=(1, 1))  # a new mtime, whatever the clock's resolution
    changed = (await characters.get("/api/characters/hermione")).json()["data"]
    assert changed["name"] == "헤르미온느 (개정판)"

    presets_file.write_text("{ broken")
    os.utime(presets_file, ns=(2, 2))
    kept = await characters.get("/api/characters/hermione")
    assert kept.status_code == 200 and kept.json()["data"]["name"] == "헤르미온느 (개정판)"


def test_a_broken_presets_file_stops_start_up(tmp_path, redis_url):
    broken = tmp_path / "characters.json"
    broken.write_text('{"characters": [{"id": "x"}]}')
    with pytest.raises(PresetError, match="cannot load presets"):
        create_app(CharactersSettings(redis_url=redis_url, characters_file=str(broken)))


async def test_create_read_update_delete(characters, redis):
    created = await characters.post("/api/characters", json=NEW, headers=ALICE)
    assert created.status_code == 201
    character = created.json()["data"]
    assert character["id"].startswith("usr_") and character["owner"] == "alice"
    assert character["is_preset"] is False and character["created_at"]
    path = f"/api/characters/{character['id']}"

    assert (await characters.get(path)).json()["data"]["name"] == NEW["name"]
    replaced = await characters.put(path, json={**NEW, "name": "새 이름"}, headers=ALICE)
    assert replaced.json()["data"]["name"] == "새 이름"
    assert replaced.json()["data"]["tags"] == NEW["tags"]
    patched = await characters.patch(path, json={"category": "커스텀"}, headers=ALICE)
    assert patched.json()["data"]["category"] == "커스텀"
    assert patched.json()["data"]["name"] == "새 이름"

    assert (await characters.delete(path, headers=ALICE)).json()["data"]["deleted"] is True
    assert (await characters.get(path)).status_code == 404
    assert await redis.keys("characters:*") == []


async def test_only_the_owner_may_change_a_character(characters):
    character = (await characters.post("/api/characters", json=NEW, headers=ALICE)).json()["data"]
    path = f"/api/characters/{character['id']}"
    for response in (
        await characters.put(path, json=NEW, headers=BOB),
        await characters.patch(path, json={"name": "x"}, headers=BOB),
        await characters.delete(path, headers=BOB),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "not_owner"
    assert (await characters.get(path)).json()["data"]["name"] == NEW["name"]
    assert (await characters.get("/api/characters", headers=BOB)).json()["data"]["characters"] == []


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
async def test_presets_are_read_only(characters, method):
    kwargs = {} if method == "delete" else {"json": NEW}
    response = await getattr(characters, method)("/api/characters/hermione", **kwargs)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "preset_read_only"


async def test_missing_characters_are_404(characters):
    for response in (
        await characters.get("/api/characters/usr_0000000000000000"),
        await characters.put("/api/characters/usr_0000000000000000", json=NEW),
        await characters.delete("/api/characters/usr_0000000000000000"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "character_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"persona": "p"},
        {"name": "", "persona": "p"},
        {"name": "n" * 101, "persona": "p"},
        {"name": "n", "persona": ""},
        {"name": "n", "persona": "p" * 8001},
        {**NEW, "description": "d" * 2001},
        {**NEW, "sample_dialogue": "s" * 4001},
        {**NEW, "tags": ["t"] * 21},
        {**NEW, "tags": ["t" * 31]},
        {**NEW, "category": "c" * 51},
        {**NEW, "voice_id": "Not A Slug!"},
        {**NEW, "image_url": "javascript:alert(1)"},
        {**NEW, "image_url": "//evil.example/x.png"},
        # A NUL broke the PNG export (a file path) with IMAGES_DIR set.
        {**NEW, "image_url": "/images/a\u0000b.png"},
        {**NEW, "image_url": "https://example.com/a\u001fb.png"},
        {**NEW, "is_preset": True},
        {**NEW, "owner": "bob"},
    ],
)
async def test_bad_characters_get_422_and_store_nothing(characters, redis, body):
    response = await characters.post("/api/characters", json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert await redis.keys("characters:*") == []


async def test_patch_refuses_null_for_required_fields(characters):
    character = (await characters.post("/api/characters", json=NEW)).json()["data"]
    response = await characters.patch(f"/api/characters/{character['id']}", json={"name": None})
    assert response.status_code == 422


async def test_listing_filters_and_pages_newest_first(characters):
    for index in range(5):
        body = {**NEW, "name": f"캐릭터 {index}", "category": "짝수" if index % 2 == 0 else "홀수"}
        await characters.post("/api/characters", json=body, headers=ALICE)
    first = (await characters.get("/api/characters?limit=2", headers=ALICE)).json()["data"]
    assert [c["name"] for c in first["characters"]] == ["캐릭터 4", "캐릭터 3"]
    second = await characters.get(
        f"/api/characters?limit=2&cursor={first['next_cursor']}", headers=ALICE
    )
    assert [c["name"] for c in second.json()["data"]["characters"]] == ["캐릭터 2", "캐릭터 1"]
    even = (await characters.get("/api/characters?category=짝수", headers=ALICE)).json()["data"]
    assert [c["name"] for c in even["characters"]] == ["캐릭터 4", "캐릭터 2", "캐릭터 0"]
    assert even["next_cursor"] is None

    presets = characters.get
    assert [
        c["id"]
        for c in (await presets("/api/characters/presets?tag=해리포터")).json()["data"][
            "characters"
        ]
    ] == ["hermione"]
    assert [
        c["id"]
        for c in (await presets("/api/characters/presets?q=셜록")).json()["data"]["characters"]
    ] == ["sherlock"]
    assert (await presets("/api/characters/presets?limit=201")).status_code == 422
    assert (await presets("/api/characters/presets?cursor=garbage!")).status_code == 422


async def test_presets_are_not_re_read_while_the_mtime_stands(characters, presets_file):
    before = presets_file.stat().st_mtime_ns
    data = json.loads(presets_file.read_text())
    data["characters"][0]["name"] = "바뀐 이름"
    presets_file.write_text(json.dumps(data, ensure_ascii=False))
    os.utime(presets_file, ns=(before, before))
    name = (await characters.get("/api/characters/hermione")).json()["data"]["name"]
    assert name == "헤르미온느 그레인저"


async def test_put_without_card_fields_keeps_them(characters):
    body = {**NEW, "scenario": "비 오는 밤", "first_message": "어서 오세요"}
    character = (await characters.post("/api/characters", json=body)).json()["data"]
    replaced = await characters.put(f"/api/characters/{character['id']}", json=NEW)
    assert replaced.json()["data"]["scenario"] == "비 오는 밤"
    assert replaced.json()["data"]["first_message"] == "어서 오세요"


async def test_patch_obeys_the_same_limits_and_404s(characters):
    character = (await characters.post("/api/characters", json=NEW)).json()["data"]
    too_long = await characters.patch(
        f"/api/characters/{character['id']}", json={"name": "n" * 101}
    )
    assert too_long.status_code == 422
    missing = await characters.patch("/api/characters/usr_0000000000000000", json={"name": "x"})
    assert missing.status_code == 404


async def test_concurrent_patches_keep_every_change(characters):
    character = (await characters.post("/api/characters", json=NEW)).json()["data"]
    path = f"/api/characters/{character['id']}"
    changes = [{"name": "새 이름"}, {"category": "새 분류"}, {"description": "새 설명"}]
    await asyncio.gather(*(characters.patch(path, json=change) for change in changes))
    final = (await characters.get(path)).json()["data"]
    assert (final["name"], final["category"], final["description"]) == (
        "새 이름",
        "새 분류",
        "새 설명",
    )


async def test_pages_do_not_shift_when_characters_are_added(characters):
    for index in range(3):
        await characters.post("/api/characters", json={**NEW, "name": f"c{index}"})
    first = (await characters.get("/api/characters?limit=2")).json()["data"]
    await characters.post("/api/characters", json={**NEW, "name": "newer"})
    second = (await characters.get(f"/api/characters?limit=2&cursor={first['next_cursor']}")).json()
    names = [c["name"] for c in first["characters"] + second["data"]["characters"]]
    assert names == ["c2", "c1", "c0"]


@pytest.mark.parametrize("scores", ["distinct", "tied"])
@pytest.mark.parametrize("race", ["create", "delete"])
async def test_a_filtered_listing_neither_repeats_nor_skips_when_a_write_lands_meanwhile(
    redis, redis_url, race, scores
):
    """A listing that filters reads the owner set in batches; a character created or deleted
    between two batches of one request must not shift the next batch (by an offset it did:
    one repeated, or one skipped and never listed). Records made in the same instant (one
    score) are ordered by id, and paged through as well."""
    store = CharacterStore(redis, CharactersSettings(redis_url=redis_url))
    owned = store.owner_key("carol")
    for _ in range(12):
        await store.create(Owner("carol"), {})
    if scores == "tied":
        await redis.zadd(owned, dict.fromkeys(await redis.zrange(owned, 0, -1), 1000.0))
    # Named by their place in the listing (p0 first); every other one is filtered out.
    listed = await redis.zrevrange(owned, 0, -1)
    for place, record_id in enumerate(listed):
        record = {"name": f"p{place}", "keep": place % 2 == 1, "owner": "carol"}
        await redis.set(store.item_key(record_id), json.dumps(record))
    writer = SyncRedis.from_url(redis_url, decode_responses=True)

    def land_a_write() -> None:
        """Another request's write, made while this listing reads its first batch."""
        if race == "create":
            record = {"name": "new", "keep": True, "owner": "carol"}
            writer.set(store.item_key("usr_new"), json.dumps(record))
            writer.zadd(owned, {"usr_new": time.time() + 60})
        else:  # two of the first batch, read already (and filtered out)
            for record_id in listed[0], listed[2]:
                writer.zrem(owned, record_id)
                writer.delete(store.item_key(record_id))

    calls = 0

    def select(record: dict) -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            land_a_write()
        return record["name"] if record["keep"] else None

    page = await store.page_owned("carol", None, 3, select)
    writer.close()
    assert page.items == ["p1", "p3", "p5"]


@pytest.mark.parametrize("method", ["put", "patch"])
async def test_the_object_get_answered_may_be_sent_back_edited(characters, method):
    """API.md's character object has read-only keys (id, is_preset, owner, timestamps): a
    client that edits what GET answered and sends it back is heard, the read-only keys left
    as they are whatever it says; a key the object does not have is still refused."""
    made = await characters.post("/api/characters", json=NEW, headers=ALICE)
    path = f"/api/characters/{made.json()['data']['id']}"
    read = (await characters.get(path)).json()["data"]
    sent = {
        **read,
        "name": "새 이름",
        "id": "usr_someone_else",
        "is_preset": True,
        "owner": "bob",
        "created_at": "2000-01-01T00:00:00Z",
    }
    changed = await characters.request(method, path, json=sent, headers=ALICE)
    assert changed.status_code == 200, changed.text
    now = (await characters.get(path)).json()["data"]
    assert now["name"] == "새 이름"
    kept = ("id", "is_preset", "owner", "created_at")
    assert {k: now[k] for k in kept} == {k: read[k] for k in kept}
    assert now == changed.json()["data"]

    unknown = await characters.request(method, path, json={**read, "colour": "red"}, headers=ALICE)
    assert unknown.status_code == 422, unknown.text
    assert "colour" in unknown.json()["error"]["message"]


async def test_a_write_made_from_a_stale_read_is_412_when_it_says_which_version_it_read(
    characters,
):
    """Two tabs read the same character: the first write wins, and one of the other's that
    sends If-Match with the ETag it read is refused, instead of silently undoing the first.
    Without If-Match a write goes through, as it always did."""
    made = await characters.post("/api/characters", json=NEW, headers=ALICE)
    path = f"/api/characters/{made.json()['data']['id']}"
    read = await characters.get(path)
    stale = read.headers["etag"]
    first = await characters.patch(path, json={"name": "A"}, headers={**ALICE, "If-Match": stale})
    assert first.status_code == 200, first.text
    current = first.headers["etag"]
    assert current != stale and (await characters.get(path)).headers["etag"] == current

    late = {**ALICE, "If-Match": stale}
    for method, url, body in [
        ("put", path, {**NEW, "name": "B"}),
        ("patch", path, {"name": "B"}),
        ("put", f"{path}/lorebook", {"entries": []}),
        ("delete", path, None),
    ]:
        refused = await characters.request(method, url, json=body, headers=late)
        assert refused.status_code == 412, (method, url, refused.text)
        assert refused.json()["error"]["code"] == "precondition_failed"
    after = await characters.get(path)
    assert after.json()["data"] == first.json()["data"] and after.headers["etag"] == current
    weak = await characters.patch(
        path, json={"name": "B"}, headers={**ALICE, "If-Match": f"W/{current}"}
    )
    assert weak.status_code == 412  # If-Match compares strongly: a weak tag never matches

    book = await characters.put(
        f"{path}/lorebook",
        json={"entries": []},
        headers={**ALICE, "If-Match": f'"other", {current}'},
    )
    assert book.status_code == 200, book.text
    unconditional = await characters.patch(path, json={"name": "C"}, headers=ALICE)
    assert unconditional.status_code == 200 and unconditional.headers["etag"] != current
    gone = await characters.delete(
        path, headers={**ALICE, "If-Match": unconditional.headers["etag"]}
    )
    assert gone.status_code == 200, gone.text
    assert (await characters.get(path)).status_code == 404
