"""POST /api/characters/{id}/lorebook/test: which entries a conversation would activate and
why the others were left out, without an LLM; nothing changes."""

import asyncio
import time

import pytest

from avatar_characters import service
from avatar_shared.token_estimate import default_tokens
from tests.helpers import as_user, seraphina_card

from .helpers import ALICE, characters_app

BOB = as_user("bob")
NEW = {"name": "Aria", "persona": "A wandering bard."}
FOREST = seraphina_card()["data"]["character_book"]["entries"][0]["content"]


def say(*texts: str, **more: object) -> dict:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)], **more}


async def seraphina(characters) -> str:
    response = await characters.post("/api/characters/import", json=seraphina_card(), headers=ALICE)
    assert response.status_code == 201, response.text
    return f"/api/characters/{response.json()['data']['id']}/lorebook/test"


async def own_character(characters, **entry_or_book: object) -> str:
    book = entry_or_book.pop("book", None) or {"entries": [entry_or_book]}
    response = await characters.post(
        "/api/characters", json={**NEW, "lorebook": book}, headers=ALICE
    )
    assert response.status_code == 201, response.text
    return f"/api/characters/{response.json()['data']['id']}/lorebook/test"


async def tried(characters, path: str, body: dict, headers=BOB) -> dict:
    response = await characters.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_seraphinas_forest_entry_fires_with_its_key(characters):
    path = await seraphina(characters)
    answer = await tried(characters, path, say("Hello there.", "Hi!", "What is this forest?"))
    assert answer == {
        "fired": [
            {
                "index": 0,
                "entry": "0",  # no name, an empty comment: its id
                "key": "forest",
                "place": "before_char",
                "depth": None,
                "tokens": default_tokens(FOREST.strip()),
            }
        ],
        "left_out": [],
    }
    assert await tried(characters, path, say("Hello there.", "How are you?")) == {
        "fired": [],
        "left_out": [],
    }


async def test_only_the_recent_messages_are_scanned_unless_the_request_says(characters):
    path = await seraphina(characters)
    old_forest = say("the forest", "one", "two", "three", "four", "five")
    assert (await tried(characters, path, old_forest))["fired"] == []  # LORE_SCAN_DEPTH 4
    # Counted as a book's own (SillyTavern's): the last 6 messages, the new one among them.
    assert (await tried(characters, path, {**old_forest, "scan_depth": 5}))["fired"] == []
    deeper = await tried(characters, path, {**old_forest, "scan_depth": 6})
    assert [f["key"] for f in deeper["fired"]] == ["forest"]


async def test_a_selective_entry_without_its_secondary_key_is_left_out_with_the_reason(
    characters,
):
    path = await own_character(
        characters,
        keys=["castle"],
        secondary_keys=["night"],
        selective=True,
        content="The castle sleeps.",
        name="Castle at night",
    )
    by_day = await tried(characters, path, say("the castle by day"))
    assert by_day == {
        "fired": [],
        "left_out": [{"index": 0, "entry": "Castle at night", "reason": "secondary_key_missing"}],
    }
    at_night = await tried(characters, path, say("the castle at night"))
    assert [f["entry"] for f in at_night["fired"]] == ["Castle at night"]


async def test_depth_entries_say_their_depth_and_the_budget_leaves_entries_out(characters):
    book = {
        "entries": [
            {"keys": ["sea"], "content": "@@depth 2\nThe sea is cold.", "comment": "sea"},
            {"keys": ["ship"], "content": "x" * 300, "name": "ship", "priority": -1},
        ]
    }
    path = await own_character(characters, book=book)
    answer = await tried(characters, path, say("a ship at sea"))
    placed = [(f["entry"], f["place"], f["depth"], f["tokens"]) for f in answer["fired"]]
    assert placed == [("sea", "depth", 2, 6), ("ship", "before_char", None, 100)]
    assert answer["left_out"] == []  # 106 tokens: within the default 2048
    squeezed = await tried(characters, path, say("a ship at sea", token_budget=50))
    assert [f["entry"] for f in squeezed["fired"]] == ["sea"]
    assert squeezed["left_out"] == [{"index": 1, "entry": "ship", "reason": "budget"}]


async def test_disabled_entries_are_left_out_as_disabled(characters):
    path = await own_character(characters, keys=["dragon"], enabled=False, id="d1")
    answer = await tried(characters, path, say("a dragon!"))
    assert answer == {"fired": [], "left_out": [{"index": 0, "entry": "d1", "reason": "disabled"}]}


async def test_a_hostile_regex_key_is_left_out_as_bad_regex_quickly(characters):
    broken = {"entries": [{"keys": ["/([/"], "content": "broken", "name": "broken"}]}
    refused = await characters.post("/api/characters", json={**NEW, "lorebook": broken})
    assert refused.status_code == 422 and "does not compile" in refused.text  # never stored
    book = {
        "entries": [
            {"keys": ["/(a+)+$/"], "content": "evil", "name": "evil"},
            {"keys": ["sword"], "content": "fine", "name": "fine"},
        ]
    }
    path = await own_character(characters, book=book)
    started = time.perf_counter()
    answer = await tried(characters, path, say("a sword " + "a" * 5000 + "!"))
    assert time.perf_counter() - started < 10  # not a hang (the regex timeout held)
    assert [f["entry"] for f in answer["fired"]] == ["fine"]
    assert answer["left_out"] == [{"index": 0, "entry": "evil", "reason": "bad_regex"}]


async def test_a_character_without_a_book_and_presets_answer(characters):
    response = await characters.post("/api/characters", json=NEW, headers=ALICE)
    path = f"/api/characters/{response.json()['data']['id']}/lorebook/test"
    assert await tried(characters, path, say("anything")) == {"fired": [], "left_out": []}
    preset = await tried(characters, "/api/characters/hermione/lorebook/test", say("hello"))
    assert preset["left_out"] == []
    missing = await characters.post("/api/characters/usr_nobody/lorebook/test", json=say("hi"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "character_not_found"


async def test_a_test_changes_nothing(characters):
    path = await seraphina(characters)
    character = path.removesuffix("/lorebook/test")
    before = (await characters.get(character)).json()["data"]
    await tried(characters, path, say("the forest", scan_depth=0, token_budget=1))
    assert (await characters.get(character)).json()["data"] == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        say(*["hi"] * 201),
        say("x" * 8001),
        {"messages": [{"role": "system", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
        say("hi", scan_depth=-1),
        say("hi", scan_depth=101),
        say("hi", scan_depth="4"),
        say("hi", token_budget=-1),
        say("hi", token_budget=1.5),
        say("hi", unknown=True),
    ],
)
async def test_invalid_bodies_are_422(characters, body):
    response = await characters.post("/api/characters/hermione/lorebook/test", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_tests_are_rated_per_caller(app_client, redis_url, presets_file):
    async with app_client(characters_app(redis_url, presets_file, lore_tests_per_min=2)) as client:
        path = "/api/characters/hermione/lorebook/test"
        for _ in range(2):
            assert (await client.post(path, json=say("hi"), headers=BOB)).status_code == 200
        refused = await client.post(path, json=say("hi"), headers=BOB)
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert (await client.post(path, json=say("hi"), headers=ALICE)).status_code == 200


async def test_a_test_from_a_foreign_page_is_refused(app_client, redis_url, presets_file):
    app = characters_app(redis_url, presets_file, real_identity=True)
    async with app_client(app) as client:
        client.cookies.set("anon_id", "anon-x.y")
        refused = await client.post(
            "/api/characters/hermione/lorebook/test",
            json=say("hi"),
            headers={"Origin": "https://evil.example"},
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "cross_origin_refused"


async def test_tests_past_the_replicas_slots_are_503(
    app_client, redis_url, presets_file, monkeypatch
):
    monkeypatch.setattr(service, "LORE_TESTS_IN_FLIGHT", 1)
    monkeypatch.setattr(service, "LORE_TEST_WAIT_S", 0.01)
    async with app_client(characters_app(redis_url, presets_file)) as client:
        slow = {"entries": [{"keys": ["/(a+)+$/"], "content": "x"}] * 30}  # ~10 ms each
        path = await own_character(client, book=slow)
        body = say("a" * 5000 + "!")
        answers = await asyncio.gather(*(client.post(path, json=body) for _ in range(3)))
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 200 and codes[-1] == 503, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.json()["error"]["code"] == "lorebook_tests_busy"
        assert busy.headers["Retry-After"] == "1"


async def test_keys_naming_the_character_or_the_user_fire_on_their_names(characters):
    path = await own_character(characters, keys=["{{char}}", "{{user}}"], content="names")
    for said in ("Aria, sing!", "I am User."):
        assert [f["key"] for f in (await tried(characters, path, say(said)))["fired"]], said
    assert (await tried(characters, path, say("Nobody here.")))["fired"] == []
