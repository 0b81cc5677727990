"""Card imports that must be refused before they cost anything or break an export later:
deep nesting, wrongly typed spec fields, PNGs of countless chunks, broken JSON."""

import base64
import json
import struct
import zlib

import pytest

from avatar_characters.png import placeholder_png

from .helpers import ALICE, characters_app, upload, v3_card


def deeply_nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def many_chunks(count: int) -> bytes:
    """A PNG of `count` empty ancillary chunks (each costs a list entry, nothing shown)."""
    base = placeholder_png("x", 8)
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    return base[:-12] + empty * count + base[-12:]


async def test_a_png_of_many_tiny_chunks_is_refused(characters, redis):
    response = await upload(characters, "card.png", many_chunks(100_000))
    assert response.status_code == 422 and "chunks" in response.json()["error"]["message"]
    assert await redis.keys("characters:*") == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b'{"spec": "chara_card_v2", "data": ', "JSON"),
        (json.dumps(v3_card(name="n" * 101)).encode(), "name is longer"),
        # Parsed fine, but deep enough to break copying it (was a 500).
        (json.dumps(v3_card(extensions=deeply_nested(600))).encode(), "nested deeper"),
        # Imported, then every export failed (was a 500).
        (json.dumps(v3_card(character_book={"entries": 5})).encode(), "character_book"),
        (json.dumps(v3_card(tags="a,b")).encode(), "'tags' is not a list"),
        # Python's parser takes them; stored, they were exported as bare NaN (not JSON).
        (json.dumps(v3_card(extensions={"x": float("nan")})).encode(), "NaN or Infinity"),
        (json.dumps(v3_card(extensions={"x": 1e999})).encode(), "NaN or Infinity"),
    ],
)
async def test_bad_json_cards_are_refused(characters, redis, content, says):
    response = await upload(characters, "card.json", content)
    assert response.status_code == 422, response.text
    assert says in response.json()["error"]["message"]
    assert await redis.keys("characters:*") == []


LONE = "\ud800"  # half of a UTF-16 pair: valid in a JSON escape, not encodable as UTF-8


def escaped(card: dict) -> bytes:
    """The card's JSON with every non-ASCII character escaped, lone surrogates included."""
    return json.dumps(card).encode()


def in_png(card: dict) -> bytes:
    return with_chunk(
        placeholder_png("x", 8), b"tEXt", b"chara\0" + base64.b64encode(escaped(card))
    )


@pytest.mark.parametrize(
    "card",
    [
        v3_card(name=f"Aria{LONE}"),
        v3_card(creator_notes=f"notes {LONE}"),
        v3_card(extensions={f"key{LONE}": 1}),
        v3_card(extensions={"deep": [{"x": LONE}]}),
    ],
    ids=["name", "notes", "extension key", "nested value"],
)
@pytest.mark.parametrize("wrapped", [escaped, in_png], ids=["json", "png"])
async def test_a_lone_surrogate_is_an_invalid_card_not_a_500(characters, redis, card, wrapped):
    response = await upload(characters, "card", wrapped(card))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_card" and "UTF-16" in error["message"]
    assert await redis.keys("characters:*") == []


def with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """`png` with one more chunk before IEND."""
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:-12] + chunk + png[-12:]


def bulky(card: dict, size: int) -> dict:
    return {**card, "data": {**card["data"], "extensions": {"bulk": "x" * size}}}


async def test_a_card_of_more_than_a_megabyte_of_json_is_refused(characters, redis):
    too_big = bulky(v3_card(), 1_000_000)
    as_json = await upload(characters, "card.json", json.dumps(too_big).encode())
    as_png = await upload(characters, "card.png", in_png(too_big))
    fits = await upload(characters, "card.json", json.dumps(bulky(v3_card(), 900_000)).encode())
    for refused in (as_json, as_png):
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "card_too_large" and "at most 1000000" in error["message"]
    assert fits.status_code == 201


async def test_a_pngs_picture_does_not_count_and_is_not_stored(characters, redis):
    # 3 MB of picture data (an ancillary chunk stands for it) around a small card.
    picture = with_chunk(in_png(v3_card()), b"zzZz", b"\0" * 3_000_000)
    imported = await upload(characters, "card.png", picture)
    assert imported.status_code == 201, imported.text
    assert int(await redis.get("characters:bytes:alice")) < 10_000


def minimal_book(entries: int) -> bytes:
    """A card whose lorebook has `entries` entries of keys and content alone: its export adds
    to each the fields the specs require (enabled, insertion_order, extensions, use_regex)."""
    book = {"entries": [{"keys": [f"k{i}"], "content": "c"} for i in range(entries)]}
    return json.dumps(v3_card(character_book=book), separators=(",", ":")).encode()


async def test_a_card_whose_export_would_pass_the_cap_is_refused_at_import(
    app_client, redis_url, presets_file, redis
):
    """A card of at most MAX_CARD_JSON_BYTES that would export larger made a character no
    edit could be saved for (each was 413) and whose export no import took back."""
    card = minimal_book(120)
    assert len(card) < 4_000  # the card alone would be taken
    app = characters_app(redis_url, presets_file, max_card_json_bytes=4_000)
    async with app_client(app) as characters:
        refused = await upload(characters, "card.json", card)
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "card_too_large"
    assert "exported" in error["message"] and "at most 4000" in error["message"]
    assert await redis.keys("characters:*") == []


async def test_a_card_is_taken_when_its_export_fits_the_cap_exactly(
    app_client, redis_url, presets_file
):
    card = minimal_book(120)
    async with app_client(characters_app(redis_url, presets_file)) as characters:
        made = await upload(characters, "card.json", card)
        exported = await characters.get(f"/api/characters/{made.json()['data']['id']}/export")
    size = len(exported.content)
    for cap, status in [(size - 1, 413), (size, 201)]:
        app = characters_app(redis_url, presets_file, max_card_json_bytes=cap)
        async with app_client(app) as characters:
            assert (await upload(characters, "card.json", card)).status_code == status


async def test_a_character_over_a_lowered_cap_may_change_without_growing(
    app_client, redis_url, presets_file
):
    """An imported character over MAX_CARD_JSON_BYTES (lowered since, or imported before
    its export was measured) is measured with its card before an edit as after it: a rename
    that keeps its size is saved (it was 413, the size before counted without the card)."""
    async with app_client(characters_app(redis_url, presets_file)) as characters:
        made = await upload(characters, "card.json", minimal_book(120))
    path = f"/api/characters/{made.json()['data']['id']}"
    app = characters_app(redis_url, presets_file, max_card_json_bytes=4_000)
    async with app_client(app) as characters:
        renamed = await characters.patch(path, json={"name": "Bria"}, headers=ALICE)
        unchanged = await characters.patch(path, json={"tags": []}, headers=ALICE)
        grown = await characters.patch(path, json={"name": "Bria the Bard"}, headers=ALICE)
        exported = (await characters.get(f"{path}/export")).json()["data"]
    assert [renamed.status_code, unchanged.status_code] == [200, 200], renamed.text
    assert grown.status_code == 413 and grown.json()["error"]["code"] == "card_too_large"
    assert exported["name"] == "Bria"
