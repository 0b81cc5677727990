"""A character's lorebook on its own (GET/PUT /api/characters/{id}/lorebook), and the
greetings, examples and lorebooks every preset carries."""

import json
import re

import pytest

from avatar_characters.app import create_app
from avatar_characters.settings import CharactersSettings
from avatar_shared.lorebook import Lorebook
from tests.helpers import as_user

from .helpers import ALICE, SERAPHINA, original_seraphina, png_chunks, upload, v3_card

BOB = as_user("bob")
NEW = {"name": "나만의 캐릭터", "persona": "조용하고 다정한 도서관 사서."}
BOOK = {
    "name": "도서관",
    "scan_depth": 6,
    "entries": [
        {"keys": ["서고"], "content": "지하 서고에는 금서가 있다.", "position": "after_char"},
        {"keys": ["/사서+/i"], "use_regex": True, "content": "x", "extensions": {"depth": 2}},
    ],
}


async def own_character(characters, **fields) -> str:
    response = await characters.post("/api/characters", json={**NEW, **fields}, headers=ALICE)
    return f"/api/characters/{response.json()['data']['id']}"


async def test_a_character_without_a_book_answers_an_empty_one(characters):
    path = await own_character(characters)
    response = await characters.get(f"{path}/lorebook", headers=BOB)  # readable by anyone
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"entries": []}}


async def test_the_owner_replaces_the_book_and_it_is_answered_as_sent(characters):
    path = await own_character(characters)
    stored = await characters.put(f"{path}/lorebook", json=BOOK, headers=ALICE)
    assert stored.status_code == 200, stored.text
    assert stored.json()["data"] == BOOK
    assert (await characters.get(f"{path}/lorebook")).json()["data"] == BOOK
    assert (await characters.get(path)).json()["data"]["lorebook"] == BOOK
    exported = (await characters.get(f"{path}/export")).json()["data"]["character_book"]
    assert exported["entries"][0]["content"] == BOOK["entries"][0]["content"]


async def test_an_imported_books_round_trip_is_exact(characters):
    imported = (await upload(characters, "s.png", SERAPHINA.read_bytes())).json()["data"]
    path = f"/api/characters/{imported['id']}/lorebook"
    book = (await characters.get(path)).json()["data"]
    assert book == original_seraphina()["data"]["character_book"]
    assert (await characters.put(path, json=book, headers=ALICE)).json()["data"] == book


async def test_the_book_is_read_with_the_version_its_replacement_takes_back(characters):
    """A lorebook editor sends If-Match with the ETag its GET answered (it had none), the
    character's version, so a replacement made from a stale read is 412."""
    path = await own_character(characters, lorebook=BOOK)
    read = await characters.get(f"{path}/lorebook")
    version = read.headers["etag"]
    assert version == (await characters.get(path)).headers["etag"]
    sent = {**ALICE, "If-Match": version}
    first = await characters.put(f"{path}/lorebook", json={"entries": []}, headers=sent)
    assert first.status_code == 200, first.text
    assert (await characters.get(f"{path}/lorebook")).headers["etag"] == first.headers["etag"]
    stale = await characters.put(f"{path}/lorebook", json=BOOK, headers=sent)
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "precondition_failed"
    preset = await characters.get("/api/characters/sherlock/lorebook")
    assert preset.status_code == 200 and "etag" not in preset.headers  # no one writes it


async def test_only_the_owner_may_replace_a_book(characters):
    path = await own_character(characters, lorebook=BOOK)
    refused = await characters.put(f"{path}/lorebook", json={"entries": []}, headers=BOB)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_owner"
    assert (await characters.get(f"{path}/lorebook")).json()["data"] == BOOK


async def test_preset_books_are_read_only(characters):
    book = (await characters.get("/api/characters/hermione/lorebook")).json()["data"]
    assert len(book["entries"]) >= 3
    refused = await characters.put("/api/characters/hermione/lorebook", json={"entries": []})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "preset_read_only"
    assert (await characters.get("/api/characters/hermione/lorebook")).json()["data"] == book


async def test_missing_characters_have_no_book(characters):
    for response in (
        await characters.get("/api/characters/usr_0000000000000000/lorebook"),
        await characters.put("/api/characters/usr_0000000000000000/lorebook", json=BOOK),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "character_not_found"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"entries": 5}, "entries"),
        ([], "body"),
        ({"entries": [{"keys": ["k" * 201]}]}, "entries.0.keys.0"),
        ({"entries": [{"keys": ["k"] * 65}]}, "entries.0.keys"),
        ({"entries": [{"content": "c" * 8001}]}, "entries.0.content"),
        ({"entries": [{"enabled": "yes"}]}, "entries.0.enabled"),
        ({"entries": [{"position": "middle"}]}, "entries.0.position"),
        ({"entries": [{}] * 501}, "entries"),
        ({"entries": [], "token_budget": -1}, "token_budget"),
        ({"entries": [], "scan_depth": 101}, "scan_depth"),
    ],
)
async def test_an_invalid_book_is_422_and_changes_nothing(characters, body, says):
    path = await own_character(characters, lorebook=BOOK)
    before = (await characters.get(path)).json()["data"]
    response = await characters.put(f"{path}/lorebook", json=body, headers=ALICE)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and says in error["message"]
    assert (await characters.get(path)).json()["data"] == before


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def book_with(extension: str) -> str:
    """A book's JSON with `extension` (JSON text) in an entry's extensions."""
    return '{"entries": [{"keys": ["k"], "content": "c", "extensions": {"x": ' + extension + "}}]}"


# Free-form JSON in a book that could be stored but not answered: too deep for pydantic's
# serializer (the character, its book and the owner's listing were 500s from then on; 600
# levels broke the export too), or numbers answered as null and exported as bare NaN.
UNSTORABLE = {
    "deep entry extension": (book_with(json.dumps(nested(600))), "nested deeper than 32"),
    "deep book extension": (
        json.dumps({"entries": [], "extensions": {"x": nested(300)}}),
        "nested deeper than 32",
    ),
    "NaN": (book_with("NaN"), "NaN or Infinity"),
    "Infinity in an extra field": ('{"entries": [{"weight": -Infinity}]}', "NaN or Infinity"),
}


async def assert_readable(characters, *paths: str) -> None:
    for url in (*paths, "/api/characters"):
        response = await characters.get(url, headers=ALICE)
        assert response.status_code == 200, (url, response.text[:300])


@pytest.mark.parametrize(("book", "says"), UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_a_book_that_could_not_be_answered_is_422_and_not_stored(characters, book, says):
    path = await own_character(characters, lorebook=BOOK)
    before = (await characters.get(path)).json()["data"]
    response = await characters.put(
        f"{path}/lorebook", content=book, headers={**ALICE, "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "validation_error" and says in error["message"]
    assert (await characters.get(path)).json()["data"] == before
    await assert_readable(characters, path, f"{path}/lorebook", f"{path}/export")


@pytest.mark.parametrize("method", ["post", "put", "patch"])
@pytest.mark.parametrize(("book", "says"), UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_a_character_with_such_a_book_is_422_too(characters, redis, method, book, says):
    path = await own_character(characters)
    url = "/api/characters" if method == "post" else path
    fields = "" if method == "patch" else f"{json.dumps(NEW)[1:-1]}, "
    response = await characters.request(
        method,
        url,
        content=f'{{{fields}"lorebook": {book}}}',
        headers={**ALICE, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text[:300]
    assert says in response.json()["error"]["message"]
    assert len(await redis.zrange("characters:owner:alice", 0, -1)) == 1
    assert (await characters.get(path)).json()["data"]["lorebook"] is None
    await assert_readable(characters, path)


async def test_an_exported_book_has_the_fields_the_specs_require(characters):
    """V2 and V3 require a book's `extensions` and each entry's keys, content, extensions,
    enabled and insertion_order (V3: use_regex too); the stored book stays as it was sent."""
    path = await own_character(characters)
    book = {"entries": [{"keys": ["서고"], "content": "지하 서고에는 금서가 있다."}]}
    assert (await characters.put(f"{path}/lorebook", json=book, headers=ALICE)).status_code == 200
    v3 = (await characters.get(f"{path}/export")).json()["data"]["character_book"]
    png = (await characters.get(f"{path}/export?format=png")).content
    v2 = png_chunks(png)["chara"]["data"]["character_book"]
    entry = {"extensions": {}, "enabled": True, "insertion_order": 100, **book["entries"][0]}
    assert v3 == {"extensions": {}, "entries": [{**entry, "use_regex": False}]}
    assert v2 == {"extensions": {}, "entries": [entry]}
    assert (await characters.get(f"{path}/lorebook")).json()["data"] == book
    named_only = {"name": "세계"}
    named = await characters.put(f"{path}/lorebook", json=named_only, headers=ALICE)
    assert named.status_code == 200, named.text
    v3 = (await characters.get(f"{path}/export")).json()["data"]["character_book"]
    assert v3 == {**named_only, "extensions": {}, "entries": []}


def test_the_card_schema_points_at_the_lorebook_schema(redis_url):
    document = create_app(CharactersSettings(redis_url=redis_url)).openapi()
    body = document["paths"]["/api/characters/import"]["post"]["requestBody"]
    book = body["content"]["application/json"]["schema"]["properties"]["data"]["properties"][
        "character_book"
    ]
    ref = book["anyOf"][0]["allOf"][0]["$ref"].removeprefix("#/components/schemas/")
    assert "entries" in document["components"]["schemas"][ref]["properties"]
    answer = document["paths"]["/api/characters/{character_id}/lorebook"]["get"]["responses"]
    assert answer["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/LorebookEnvelope"
    )


# --- the presets ---------------------------------------------------------------------------

HANGUL = re.compile(r"[가-힣]")
EXAMPLE_LINE = re.compile(r"^(<START>|\{\{user\}\}: .+|\{\{char\}\}: .+)$")


async def test_every_preset_has_a_greeting_examples_and_a_lorebook(characters):
    presets = (await characters.get("/api/characters/presets")).json()["data"]["characters"]
    assert len(presets) >= 6
    for preset in presets:
        name = preset["id"]
        assert HANGUL.search(preset["first_message"]), name
        assert 1 <= len(preset["alternate_greetings"]) <= 2, name
        assert all(HANGUL.search(g) for g in preset["alternate_greetings"]), name
        examples = preset["sample_dialogue"]
        assert examples.startswith("<START>\n") and examples.count("<START>") >= 2, name
        assert all(EXAMPLE_LINE.match(line) for line in examples.split("\n")), name
        assert "{{user}}: " in examples and "{{char}}: " in examples, name

        book = Lorebook.model_validate(preset["lorebook"])  # what chat will read it as
        assert 3 <= len(book.entries) <= 5, name
        keys = [key for entry in book.entries for key in entry.keys]
        assert len(keys) == len(set(keys)), name
        for entry in book.entries:
            assert any(HANGUL.search(key) for key in entry.keys), (name, entry.keys)
            assert entry.enabled is True and entry.content and HANGUL.search(entry.content)
            assert entry.position in ("before_char", "after_char")
            assert isinstance(entry.insertion_order, int) and entry.keys, name
        lore = (await characters.get(f"/api/characters/{name}/lorebook")).json()["data"]
        assert lore == preset["lorebook"]


@pytest.mark.parametrize(
    ("preset", "key"),
    [
        ("hermione", "도서관"),
        ("hermione", "그리핀도르"),
        ("hermione", "윙가디움 레비오사"),
        ("yi_sun_sin", "명량"),
        ("yi_sun_sin", "거북선"),
        ("yi_sun_sin", "한산도"),
        ("sejong", "훈민정음"),
        ("sherlock", "베이커가"),
    ],
)
async def test_presets_know_their_worlds(characters, preset, key):
    book = (await characters.get(f"/api/characters/{preset}/lorebook")).json()["data"]
    assert any(key in entry["keys"] for entry in book["entries"])


async def test_a_book_stored_with_nan_before_it_was_refused_exports_it_as_null(characters, redis):
    path = await own_character(characters, lorebook=BOOK)
    key = f"characters:item:{path.rsplit('/', 1)[1]}"
    record = json.loads(await redis.get(key))
    record["lorebook"]["extensions"] = {"weight": float("nan")}  # as taken before
    await redis.set(key, json.dumps(record), keepttl=True)
    as_json = await characters.get(f"{path}/export", headers=ALICE)
    as_png = await characters.get(f"{path}/export?format=png", headers=ALICE)
    assert as_json.status_code == 200, as_json.text[:300]
    strictly = json.loads(as_json.text, parse_constant=lambda bare: pytest.fail(bare))
    book = strictly["data"]["character_book"]
    assert book["extensions"] == {"weight": None}
    assert as_png.status_code == 200
    assert png_chunks(as_png.content)["ccv3"]["data"]["character_book"]["extensions"] == {
        "weight": None
    }


# 22 characters the regex module unrolled without bound as it compiled (a bare 500 after
# gigabytes, or the process killed); refused from its counts alone, before it is compiled.
BOMB = "/(?:a{65535}){65535}/"


@pytest.mark.parametrize("key", [BOMB, "/(?:a{101}){100}/"])
async def test_a_regex_key_too_costly_to_compile_is_422_on_every_write(characters, redis, key):
    path = await own_character(characters)
    book = {"entries": [{"keys": [key], "content": "x"}]}
    answers = [
        await characters.put(f"{path}/lorebook", json=book, headers=ALICE),
        await characters.patch(path, json={"lorebook": book}, headers=ALICE),
        await characters.post("/api/characters", json={**NEW, "lorebook": book}, headers=ALICE),
        await characters.post(
            "/api/characters/import", json=v3_card(character_book=book), headers=ALICE
        ),
    ]
    for response in answers:
        assert response.status_code == 422, response.text[:300]
        assert "too costly" in response.json()["error"]["message"]
    assert len(await redis.zrange("characters:owner:alice", 0, -1)) == 1


async def test_a_sillytavern_card_with_such_a_key_imports_it_as_plain_text(characters):
    st_entry = {"keys": [BOMB], "content": "x", "use_regex": True}
    st_entry |= {"extensions": {"selectiveLogic": 0}, "enabled": True, "insertion_order": 1}
    book = {"entries": [st_entry]}
    imported = await characters.post(
        "/api/characters/import", json=v3_card(character_book=book), headers=ALICE
    )
    assert imported.status_code == 201, imported.text[:300]
    path = f"/api/characters/{imported.json()['data']['id']}"
    exported = (await characters.get(f"{path}/export", headers=ALICE)).json()
    assert exported["data"]["character_book"]["entries"][0]["keys"] == [BOMB]
    tried = {"messages": [{"role": "user", "content": f"I typed {BOMB}"}]}
    fired = await characters.post(f"{path}/lorebook/test", json=tried, headers=ALICE)
    assert [f["key"] for f in fired.json()["data"]["fired"]] == [BOMB]


async def test_a_stored_book_is_read_without_compiling_its_regex_keys_again(characters, redis):
    """Checked when it was written: reads (a listing reads many books) do not compile its
    keys again, and a book stored before a rule refused a key stays readable."""
    path = await own_character(characters, lorebook=BOOK)
    key = f"characters:item:{path.rsplit('/', 1)[1]}"
    record = json.loads(await redis.get(key))
    record["lorebook"]["entries"][1]["keys"] = ["/(unclosed/", "/a{1001}/"]  # as taken before
    await redis.set(key, json.dumps(record), keepttl=True)
    await assert_readable(characters, path, f"{path}/lorebook", f"{path}/export")
    renamed = await characters.patch(path, json={"name": "새 이름"}, headers=ALICE)
    assert renamed.status_code == 200, renamed.text[:300]
    tried = {"messages": [{"role": "user", "content": "사서"}]}
    tested = await characters.post(f"{path}/lorebook/test", json=tried, headers=ALICE)
    assert [s["reason"] for s in tested.json()["data"]["left_out"]] == ["bad_regex"]


async def test_a_cards_oversized_entry_is_cut_in_the_lorebook_and_kept_whole_in_the_export(
    characters,
):
    """One long entry (or a RisuAI entry's long name) no longer refuses the whole card: the
    working lorebook cuts it to the limits, the stored card keeps the book whole."""
    long_entry = {"keys": ["용"], "content": "용의 역사. " * 1000, "name": "이름" * 150}
    book = {"name": "세계" * 150, "entries": [long_entry, {"keys": ["숲"], "content": "숲"}]}
    imported = await characters.post(
        "/api/characters/import", json=v3_card(character_book=book), headers=ALICE
    )
    assert imported.status_code == 201, imported.text[:300]
    path = f"/api/characters/{imported.json()['data']['id']}"
    working = (await characters.get(f"{path}/lorebook")).json()["data"]
    assert working["entries"][0]["content"] == long_entry["content"][:8000]
    assert working["entries"][0]["name"] == long_entry["name"][:200]
    assert working["name"] == book["name"][:200] and working["entries"][1] == book["entries"][1]
    exported = (await characters.get(f"{path}/export")).json()["data"]["character_book"]
    assert exported["name"] == book["name"]
    assert [(e["content"], e.get("name")) for e in exported["entries"]] == [
        (e["content"], e.get("name")) for e in book["entries"]
    ]


def book_of(blob_chars: int) -> dict:
    """A one-entry book whose `extensions` (any JSON) hold `blob_chars` characters."""
    return {"entries": [{"keys": ["k"], "content": "c", "extensions": {"blob": "x" * blob_chars}}]}


@pytest.mark.parametrize("method", ["post", "put", "patch", "lorebook"])
async def test_a_character_larger_than_an_import_takes_is_413_on_every_write(
    characters, redis, method
):
    """MAX_CARD_JSON_BYTES (1 MB) bounds what an import takes: a character made larger by
    any other write could not be imported back from its own export."""
    path = await own_character(characters, lorebook=BOOK)
    before = (await characters.get(path)).json()["data"]
    book = book_of(1_100_000)
    url, body = {
        "post": ("/api/characters", {**NEW, "lorebook": book}),
        "put": (path, {**NEW, "lorebook": book}),
        "patch": (path, {"lorebook": book}),
        "lorebook": (f"{path}/lorebook", book),
    }[method]
    verb = "put" if method == "lorebook" else method
    response = await characters.request(verb, url, json=body, headers=ALICE)
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "card_too_large" and "1000000" in error["message"]
    assert len(await redis.zrange("characters:owner:alice", 0, -1)) == 1
    assert (await characters.get(path)).json()["data"] == before
