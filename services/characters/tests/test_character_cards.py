"""Character Card V2/V3 import and export, with a real card from the ecosystem."""

import base64
import json
import struct
import zlib

import pytest

from avatar_characters.cards import MAX_CARD_BYTES
from avatar_characters.png import placeholder_png, png_with_cards

from .helpers import (
    ALICE,
    SERAPHINA,
    characters_app,
    original_seraphina,
    png_chunks,
    upload,
    v3_card,
)


def assert_keeps(original: object, exported: object, where: str = "card") -> None:
    """Everything in `original` is in `exported` unchanged (V3 may add fields, never drop)."""
    if isinstance(original, dict):
        assert isinstance(exported, dict), where
        for key, value in original.items():
            assert key in exported, f"{where}.{key} was dropped"
            assert_keeps(value, exported[key], f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(exported, list) and len(exported) == len(original), where
        for index, (a, b) in enumerate(zip(original, exported, strict=True)):
            assert_keeps(a, b, f"{where}[{index}]")
    else:
        assert exported == original, where


async def test_import_a_real_v2_png_card(characters):
    response = await upload(characters, "seraphina.png", SERAPHINA.read_bytes())
    assert response.status_code == 201, response.text
    character = response.json()["data"]
    data = original_seraphina()["data"]
    assert character["name"] == "Seraphina"
    assert character["persona"] == data["description"].strip()  # personality is empty
    assert character["description"] == data["creator_notes"].strip()
    assert character["first_message"] == data["first_mes"].strip()
    assert character["tags"] == data["tags"][:20]
    assert character["owner"] == "alice" and character["is_preset"] is False


async def test_export_keeps_every_field_of_the_imported_card(characters):
    character = (await upload(characters, "s.png", SERAPHINA.read_bytes())).json()["data"]
    exported = await characters.get(f"/api/characters/{character['id']}/export")
    assert exported.headers["content-type"].startswith("application/json")
    card = exported.json()
    assert card["spec"] == "chara_card_v3" and card["spec_version"] == "3.0"
    original = original_seraphina()
    assert_keeps(original["data"], card["data"])  # lorebook, greetings, extensions included
    assert_keeps({k: v for k, v in original.items() if k not in ("spec", "spec_version")}, card)
    # What V3 requires and V2 lacks is added.
    assert card["data"]["group_only_greetings"] == []
    assert all(e["use_regex"] is False for e in card["data"]["character_book"]["entries"])
    assert isinstance(card["data"]["modification_date"], int)


async def test_round_trip_through_our_own_export_is_stable(characters):
    first = (await upload(characters, "s.png", SERAPHINA.read_bytes())).json()["data"]
    card_1 = (await characters.get(f"/api/characters/{first['id']}/export")).json()
    second = await characters.post("/api/characters/import", json=card_1, headers=ALICE)
    assert second.status_code == 201
    card_2 = (await characters.get(f"/api/characters/{second.json()['data']['id']}/export")).json()
    # Only when each character was last changed may differ (they were made a moment apart).
    for card in (card_1, card_2):
        assert isinstance(card["data"].pop("modification_date"), int)
    assert card_2 == card_1


async def test_edits_show_in_the_export(characters):
    character = (await upload(characters, "s.png", SERAPHINA.read_bytes())).json()["data"]
    path = f"/api/characters/{character['id']}"
    await characters.patch(path, json={"name": "Sera", "persona": "새 페르소나"}, headers=ALICE)
    data = (await characters.get(f"{path}/export")).json()["data"]
    assert data["name"] == "Sera" and data["description"] == "새 페르소나"
    assert data["personality"] == ""
    assert_keeps(original_seraphina()["data"]["character_book"], data["character_book"])


async def test_png_export_carries_both_chunks(characters):
    response = await characters.get("/api/characters/hermione/export?format=png")
    assert response.headers["content-type"] == "image/png"
    chunks = png_chunks(response.content)
    assert chunks["chara"]["spec"] == "chara_card_v2"
    assert chunks["ccv3"]["spec"] == "chara_card_v3"
    assert chunks["ccv3"]["data"]["name"] == "헤르미온느 그레인저"
    reimported = await upload(characters, "h.png", response.content)
    assert reimported.json()["data"]["name"] == "헤르미온느 그레인저"


async def test_ccv3_is_preferred_over_chara(characters):
    v2 = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Old", "description": "v2"},
    }
    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {"name": "New", "description": "v3"},
    }
    png = png_with_cards(placeholder_png("x", 8), {"chara": v2, "ccv3": v3})
    assert (await upload(characters, "c.png", png)).json()["data"]["name"] == "New"


@pytest.mark.parametrize("keyword", ["ccv3", "chara"])
async def test_of_two_chunks_of_one_keyword_the_first_is_read_as_sillytavern_does(
    characters, keyword
):
    """SillyTavern's character-card-parser.js takes the first chunk of each keyword."""
    spec = "chara_card_v3" if keyword == "ccv3" else "chara_card_v2"
    first, second = ({"spec": spec, "data": {"name": n, "description": "d"}} for n in "AB")
    chunks = [_text_chunk(keyword.encode(), _b64(card)) for card in (first, second)]
    base = placeholder_png("x", 8)
    png = base[:-12] + b"".join(chunks) + base[-12:]
    assert (await upload(characters, "c.png", png)).json()["data"]["name"] == "A"


def _huge_png() -> bytes:
    png = bytearray(placeholder_png("x", 8))
    png[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width and height
    return bytes(png)


def _png_with_text(keyword: bytes, text: bytes) -> bytes:
    base = placeholder_png("x", 8)
    return base[:-12] + _text_chunk(keyword, text) + base[-12:]


def _text_chunk(keyword: bytes, text: bytes) -> bytes:
    chunk_data = keyword + b"\0" + text
    chunk = struct.pack(">I", len(chunk_data)) + b"tEXt" + chunk_data
    return chunk + struct.pack(">I", zlib.crc32(b"tEXt" + chunk_data) & 0xFFFFFFFF)


WRONG_SPEC = {"spec": "chara_card_v9", "data": {}}
NO_PERSONA = {"spec": "chara_card_v2", "data": {"name": "n"}}


def _b64(obj: object) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("content", "status", "code", "says"),
    [
        (b"GIF89a not a card", 422, "invalid_card", "neither a PNG"),
        (placeholder_png("x", 8), 422, "invalid_card", "no character card"),
        (_png_with_text(b"chara", b"%%%not base64%%%"), 422, "invalid_card", "base64"),
        (_png_with_text(b"chara", base64.b64encode(b"{not json")), 422, "invalid_card", "JSON"),
        (_png_with_text(b"chara", _b64(WRONG_SPEC)), 422, "invalid_card", "Unsupported"),
        (_png_with_text(b"chara", _b64(NO_PERSONA)), 422, "invalid_card", "description"),
        (placeholder_png("x", 8)[:40], 422, "invalid_card", "truncated"),
        (_huge_png(), 413, "card_too_large", "pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_CARD_BYTES, 413, "card_too_large", "larger"),
    ],
)  # fmt: skip
async def test_bad_cards_are_refused_with_a_reason(characters, redis, content, status, code, says):
    response = await upload(characters, "card.png", content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"]
    assert await redis.keys("characters:*") == []


async def test_an_upload_needs_a_file_field_and_a_known_type(characters):
    no_file = await characters.post("/api/characters/import", files={"other": ("a", b"x")})
    assert (no_file.status_code, no_file.json()["error"]["code"]) == (400, "missing_file")
    extra = await characters.post(
        "/api/characters/import", files={"file": ("a.json", b"{}")}, data={"other": "x"}
    )
    assert extra.status_code == 422 and "other" in extra.json()["error"]["message"]
    wrong_type = await characters.post(
        "/api/characters/import", content=b"x", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415


async def test_a_v3_card_keeps_its_v3_fields(characters):
    card = v3_card(
        nickname="Ari",
        assets=[{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        creator_notes_multilingual={"ko": "떠돌이 음유시인"},
        group_only_greetings=["Hello, everyone!"],
        source=["https://example.com/aria"],
    )
    created = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert created.status_code == 201, created.text
    exported = await characters.get(f"/api/characters/{created.json()['data']['id']}/export")
    assert_keeps(card["data"], exported.json()["data"])


async def test_long_and_null_card_fields_are_accepted(characters):
    card = v3_card(first_mes="인사말 " * 2000, scenario="장면 " * 3000, creator_notes=None)
    created = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert created.status_code == 201, created.text
    character = created.json()["data"]
    assert 3990 < len(character["first_message"]) <= 4000 and character["description"] == ""
    exported = await characters.get(f"/api/characters/{character['id']}/export")
    assert exported.json()["data"]["first_mes"] == card["data"]["first_mes"]  # kept whole


V1_CARD = {
    "name": "Old",
    "description": "An old V1 card.",
    "personality": "quiet",
    "scenario": "a tavern",
    "first_mes": "Hello, {{user}}.",
    "mes_example": "<START>\n{{char}}: Hm.",
}


@pytest.mark.parametrize("as_png", [False, True], ids=["json", "png"])
async def test_a_v1_card_is_imported_as_sillytavern_imports_it(characters, as_png):
    """Character Card V1 (spec_v1.md): the six fields at the top level, no `spec`; read into a
    V2 card's data, as SillyTavern's v1 import does."""
    if as_png:
        response = await upload(characters, "v1.png", _png_with_text(b"chara", _b64(V1_CARD)))
    else:
        response = await characters.post("/api/characters/import", json=V1_CARD, headers=ALICE)
    assert response.status_code == 201, response.text[:300]
    character = response.json()["data"]
    assert (character["name"], character["persona"]) == ("Old", "An old V1 card.")
    assert (character["personality"], character["scenario"]) == ("quiet", "a tavern")
    assert character["first_message"] == "Hello, {{user}}."
    assert character["sample_dialogue"] == V1_CARD["mes_example"]
    exported = (await characters.get(f"/api/characters/{character['id']}/export")).json()
    assert exported["spec"] == "chara_card_v3"
    assert {key: exported["data"][key] for key in V1_CARD} == V1_CARD


async def test_null_or_wrongly_typed_spec_fields_are_exported_as_the_specs_type_them(characters):
    """Cards in the wild carry null for empty fields; the V2 and V3 specs require a string, an
    array or an object there, and strict readers refuse anything else."""
    nulls = ("first_mes", "creator_notes", "scenario", "system_prompt", "alternate_greetings")
    card = v3_card(**dict.fromkeys(nulls), tags=None, extensions=None, creator=7)
    card["data"] |= {"character_version": None, "group_only_greetings": None}
    card["data"] |= {"character_book": None, "mes_example": None}
    created = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert created.status_code == 201, created.text[:300]
    path = f"/api/characters/{created.json()['data']['id']}/export"
    v3 = (await characters.get(path)).json()["data"]
    v2 = png_chunks((await characters.get(f"{path}?format=png")).content)["chara"]["data"]
    for data in (v3, v2):
        for key in ("first_mes", "creator_notes", "scenario", "system_prompt", "mes_example"):
            assert data[key] == "", key
        assert (data["creator"], data["character_version"]) == ("", "")
        assert (data["tags"], data["alternate_greetings"], data["extensions"]) == ([], [], {})
        assert "character_book" not in data
    assert v3["group_only_greetings"] == []


@pytest.mark.parametrize("field", ["description", "personality"])
async def test_a_long_description_is_cut_for_the_persona_and_kept_whole_in_the_card(
    characters, field
):
    """Long descriptions are common on Chub and SillyTavern: the persona takes the first 8000
    characters (the personality's, for a card without a description), the export all."""
    long = "긴 설명. " * 2000  # 12,000 characters
    card = v3_card(**{"description": "", field: long})
    created = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert created.status_code == 201, created.text[:300]
    character = created.json()["data"]
    assert character["persona"] == long[:8000].strip()
    path = f"/api/characters/{character['id']}"
    renamed = await characters.patch(path, json={"name": "새 이름"}, headers=ALICE)
    assert renamed.status_code == 200
    assert (await characters.get(f"{path}/export")).json()["data"][field] == long


@pytest.mark.parametrize(
    "encode",
    [
        base64.encodebytes,  # lines of 76 characters, as MIME encoders write them
        lambda card: base64.b64encode(card).rstrip(b"="),
    ],
    ids=["line breaks", "no padding"],
)
async def test_a_card_chunk_is_read_as_other_readers_read_it(characters, encode):
    """SillyTavern's reader (Node's Buffer.from) skips line breaks and takes base64 without
    its padding; such cards were refused as not base64."""
    card = json.dumps(v3_card()).encode()
    card += b" " * (1 - len(card) % 3)  # not a multiple of 3 bytes: base64 pads it
    response = await upload(characters, "card.png", _png_with_text(b"chara", encode(card)))
    assert response.status_code == 201, response.text
    assert response.json()["data"]["name"] == "Aria"


async def test_a_books_numbers_written_as_floats_are_taken(characters):
    """V2 types these `number`; 100.0 is an integer in JSON Schema's words (was refused)."""
    entry = {"keys": ["a"], "content": "b", "insertion_order": 100.0, "priority": 10.0}
    book = {"scan_depth": 4.0, "token_budget": 500.0, "entries": [entry]}
    created = await characters.post(
        "/api/characters/import", json=v3_card(character_book=book), headers=ALICE
    )
    assert created.status_code == 201, created.text
    taken = created.json()["data"]["lorebook"]
    assert (taken["scan_depth"], taken["entries"][0]["insertion_order"]) == (4, 100)


async def test_a_stored_image_url_that_is_no_path_exports_the_placeholder(
    app_client, redis, redis_url, presets_file, tmp_path
):
    """A NUL in an image_url (refused now, taken before) made the PNG export a 500; it is
    still answered as stored."""
    (tmp_path / "images").mkdir()
    app = characters_app(redis_url, presets_file, images_dir=str(tmp_path / "images"))
    async with app_client(app) as client:
        made = await client.post("/api/characters", json={"name": "Aria", "persona": "A bard."})
        character_id = made.json()["data"]["id"]
        key = f"characters:item:{character_id}"
        stored = json.loads(await redis.get(key))
        await redis.set(key, json.dumps({**stored, "image_url": "/images/a\u0000b.png"}))
        exported = await client.get(f"/api/characters/{character_id}/export?format=png")
        read = await client.get(f"/api/characters/{character_id}")
        listed = await client.get("/api/characters")
    assert exported.status_code == 200, exported.text[:300]
    assert png_chunks(exported.content)["ccv3"]["data"]["name"] == "Aria"
    assert read.status_code == 200 and read.json()["data"]["image_url"] == "/images/a\u0000b.png"
    assert listed.status_code == 200, listed.text
