"""A character's prompt fields (a Character Card's personality, greetings, system prompt,
post-history instructions, nickname and lorebook): written, limited, imported, exported."""

import json

import pytest

from tests.helpers import as_user

from .helpers import ALICE, SERAPHINA, original_seraphina, png_chunks, upload
from .test_character_cards import assert_keeps

BOB = as_user("bob")
NEW = {"name": "나만의 캐릭터", "persona": "조용하고 다정한 도서관 사서."}
BOOK = {
    "name": "도서관 비밀",
    "entries": [
        {"keys": ["서고"], "content": "지하 서고에는 금서가 있다.", "insertion_order": 5},
        {"keys": ["사서"], "content": " 사서는 밤마다 책과 이야기한다.\n", "vendor": {"x": 1}},
    ],
}
PROMPT_FIELDS = {
    "personality": "수줍음, 책벌레",
    "alternate_greetings": ["어서 오세요.", "또 오셨네요!"],
    "system_prompt": "{{original}} 사서답게 말하라.",
    "post_history_instructions": "짧게 답하라.",
    "nickname": "사서님",
    "scenario": "비 오는 도서관",
    "first_message": "쉿, 여긴 도서관이에요.",
    "lorebook": BOOK,
}


async def test_create_takes_every_prompt_field_and_answers_them_as_sent(characters):
    created = await characters.post("/api/characters", json={**NEW, **PROMPT_FIELDS})
    assert created.status_code == 201, created.text
    character = created.json()["data"]
    for field, value in PROMPT_FIELDS.items():
        assert character[field] == value, field  # the book too: no nulls for what it left out
    again = (await characters.get(f"/api/characters/{character['id']}")).json()["data"]
    assert again == character


async def test_put_keeps_the_prompt_fields_it_leaves_out_and_replaces_those_it_sends(characters):
    character = (await characters.post("/api/characters", json={**NEW, **PROMPT_FIELDS})).json()
    path = f"/api/characters/{character['data']['id']}"
    kept = (await characters.put(path, json={**NEW, "name": "새 이름"})).json()["data"]
    assert kept["name"] == "새 이름"
    assert {f: kept[f] for f in PROMPT_FIELDS} == PROMPT_FIELDS
    sent = {"personality": "", "alternate_greetings": [], "nickname": "", "lorebook": None}
    replaced = (await characters.put(path, json={**NEW, **sent})).json()["data"]
    assert {f: replaced[f] for f in sent} == sent
    assert replaced["system_prompt"] == PROMPT_FIELDS["system_prompt"]  # left out: kept


async def test_patch_changes_any_subset(characters):
    character = (await characters.post("/api/characters", json={**NEW, **PROMPT_FIELDS})).json()
    path = f"/api/characters/{character['data']['id']}"
    patched = await characters.patch(path, json={"personality": "대담함", "nickname": "관장"})
    data = patched.json()["data"]
    assert (data["personality"], data["nickname"]) == ("대담함", "관장")
    assert data["lorebook"] == BOOK and data["alternate_greetings"] == [
        "어서 오세요.",
        "또 오셨네요!",
    ]
    cleared = (await characters.patch(path, json={"lorebook": None})).json()["data"]
    assert cleared["lorebook"] is None
    book = {"entries": [{"keys": ["열람실"], "content": "열람실은 조용하다."}]}
    assert (await characters.patch(path, json={"lorebook": book})).json()["data"][
        "lorebook"
    ] == book


async def test_generation_defaults_are_kept_like_the_card_fields(characters):
    defaults = {"temperature": 0.3, "top_p": 0.8, "stop": ["###"]}
    created = await characters.post("/api/characters", json={**NEW, "generation": defaults})
    character = created.json()["data"]
    assert {k: v for k, v in character["generation"].items() if v is not None} == defaults
    path = f"/api/characters/{character['id']}"
    kept = (await characters.put(path, json=NEW)).json()["data"]  # a PUT that leaves it out
    assert kept["generation"] == character["generation"]
    cleared = (await characters.patch(path, json={"generation": None})).json()["data"]
    assert cleared["generation"] is None


LONG = "가" * 4001


@pytest.mark.parametrize(
    "fields",
    [
        {"personality": LONG},
        {"system_prompt": LONG},
        {"post_history_instructions": LONG},
        {"nickname": "n" * 101},
        {"alternate_greetings": ["안녕"] * 21},
        {"alternate_greetings": [LONG]},
        {"alternate_greetings": ["   "]},
        {"alternate_greetings": "안녕"},
        {"lorebook": {"entries": 5}},
        {"lorebook": {"entries": [{"keys": ["k" * 201]}]}},
        {"lorebook": {"entries": [{"content": "c" * 8001}]}},
        {"lorebook": {"entries": [{"enabled": "yes"}]}},
        {"lorebook": {"entries": [{"position": "somewhere"}]}},
        {"lorebook": {"entries": [{}] * 501}},
        {"lorebook": {"scan_depth": -1, "entries": []}},
        {"generation": {"top_p": 5}},
        {"generation": {"temperature": 2.5}},
        {"generation": {"stop": "###"}},
        {"generation": {"typical_p": 0.9}},  # not a control we send
    ],
)
async def test_over_the_limits_is_422_for_create_put_and_patch(characters, redis, fields):
    refused = await characters.post("/api/characters", json={**NEW, **fields}, headers=ALICE)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "validation_error"
    assert await redis.keys("characters:*") == []

    character = (await characters.post("/api/characters", json=NEW, headers=ALICE)).json()["data"]
    path = f"/api/characters/{character['id']}"
    for response in (
        await characters.put(path, json={**NEW, **fields}, headers=ALICE),
        await characters.patch(path, json=fields, headers=ALICE),
    ):
        assert response.status_code == 422, response.text
    assert (await characters.get(path)).json()["data"] == character


async def test_the_limits_themselves_are_accepted(characters):
    at_limits = {
        "personality": "가" * 4000,
        "system_prompt": "가" * 4000,
        "post_history_instructions": "가" * 4000,
        "nickname": "n" * 100,
        "alternate_greetings": ["가" * 4000] * 20,
    }
    created = await characters.post("/api/characters", json={**NEW, **at_limits})
    assert created.status_code == 201, created.text


async def test_the_byte_quota_counts_the_prompt_fields(app_client, redis_url, redis, presets_file):
    from .helpers import characters_app

    app = characters_app(redis_url, presets_file, max_character_bytes_per_user=60_000)
    async with app_client(app) as characters:
        character = (await characters.post("/api/characters", json=NEW)).json()["data"]
        path = f"/api/characters/{character['id']}"
        greetings = {"alternate_greetings": ["가" * 4000] * 3}  # about 36 kB of UTF-8
        assert (await characters.patch(path, json=greetings)).status_code == 200
        item = f"characters:item:{character['id']}"
        assert int(await redis.get("characters:bytes:anonymous")) == await redis.strlen(item)
        book = {"entries": [{"keys": ["k"], "content": "가" * 3000}] * 3}
        too_big = await characters.put(f"{path}/lorebook", json=book)
        again = await characters.post("/api/characters", json={**NEW, **greetings})
        assert int(await redis.get("characters:bytes:anonymous")) == await redis.strlen(item)
    assert too_big.status_code == 409 and too_big.json()["error"]["code"] == "quota_exceeded"
    assert again.status_code == 409


# --- import and export ---------------------------------------------------------------------


def seraphina_with_every_field(spec: str = "chara_card_v2") -> dict:
    """Her real card, with the prompt fields hers leaves empty filled in."""
    card = original_seraphina()
    card["spec"] = spec
    card["data"].update(
        personality="caring, protective, gentle",
        alternate_greetings=["*Seraphina looks up from her herbs.* Oh! You're awake."],
        system_prompt="{{original}} Write as Seraphina, in the third person.",
        post_history_instructions="Keep {{char}}'s replies under 200 words.",
        scenario="{{user}} wakes in Seraphina's glade.",
        mes_example="<START>\n{{user}}: Who are you?\n{{char}}: The guardian of this forest.",
    )
    if spec == "chara_card_v3":
        card["data"]["nickname"] = "Sera"
    return card


async def test_seraphinas_png_fills_the_prompt_fields(characters):
    response = await upload(characters, "seraphina.png", SERAPHINA.read_bytes())
    assert response.status_code == 201, response.text
    character, data = response.json()["data"], original_seraphina()["data"]
    assert character["persona"] == data["description"].strip()
    assert character["personality"] == data["personality"]
    assert character["first_message"] == data["first_mes"].strip()
    assert character["alternate_greetings"] == data["alternate_greetings"]
    assert character["scenario"] == data["scenario"] and character["nickname"] == ""
    book = character["lorebook"]
    assert len(book["entries"]) == 4 and "forest" in book["entries"][0]["keys"]
    assert book == data["character_book"]  # as the card has it, to the field


@pytest.mark.parametrize("spec", ["chara_card_v2", "chara_card_v3"])
async def test_every_card_field_has_its_own_field(characters, spec):
    card = seraphina_with_every_field(spec)
    response = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert response.status_code == 201, response.text
    character, data = response.json()["data"], card["data"]
    assert character["persona"] == data["description"].strip()  # personality no longer joined
    for field, key in [
        ("personality", "personality"),
        ("alternate_greetings", "alternate_greetings"),
        ("system_prompt", "system_prompt"),
        ("post_history_instructions", "post_history_instructions"),
        ("scenario", "scenario"),
        ("sample_dialogue", "mes_example"),
        ("lorebook", "character_book"),
    ]:
        assert character[field] == data[key], field
    assert character["nickname"] == data.get("nickname", "")


async def test_a_card_with_a_personality_alone_makes_it_the_persona(characters):
    card = {"spec": "chara_card_v2", "data": {"name": "P", "personality": "shy, kind"}}
    character = (await characters.post("/api/characters/import", json=card)).json()["data"]
    assert (character["persona"], character["personality"]) == ("shy, kind", "")
    exported = (await characters.get(f"/api/characters/{character['id']}/export")).json()
    assert exported["data"]["personality"] == "shy, kind" and exported["data"]["description"] == ""


async def test_an_edited_persona_made_of_the_personality_replaces_it_in_the_export(characters):
    """The persona came from the card's personality: edited, it is written as the description,
    and the old personality (which it replaces) no longer contradicts it."""
    card = {"spec": "chara_card_v2", "data": {"name": "P", "description": "", "personality": "shy"}}
    character = (await characters.post("/api/characters/import", json=card)).json()["data"]
    path = f"/api/characters/{character['id']}"
    assert (await characters.patch(path, json={"persona": "Bold and loud."})).status_code == 200
    exported = (await characters.get(f"{path}/export")).json()["data"]
    assert (exported["description"], exported["personality"]) == ("Bold and loud.", "")
    assert (await characters.patch(path, json={"personality": "bold"})).status_code == 200
    exported = (await characters.get(f"{path}/export")).json()["data"]
    assert (exported["description"], exported["personality"]) == ("Bold and loud.", "bold")


@pytest.mark.parametrize(
    ("book", "says"),
    [
        ({"entries": [{"keys": ["k" * 201]}]}, "character_book.entries.0.keys.0"),
        ({"entries": [{"keys": ["k"], "enabled": "yes"}]}, "character_book.entries.0.enabled"),
        ({"entries": [{"keys": ["k"], "insertion_order": "first"}]}, "insertion_order"),
        ({"entries": [], "token_budget": -5}, "character_book.token_budget"),
    ],
)
async def test_a_card_with_a_bad_lorebook_is_refused_naming_the_field(
    characters, redis, book, says
):
    card = original_seraphina()
    card["data"]["character_book"] = book
    response = await characters.post("/api/characters/import", json=card, headers=ALICE)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_card" and says in error["message"]
    assert await redis.keys("characters:*") == []


@pytest.mark.parametrize("spec", ["chara_card_v2", "chara_card_v3"])
async def test_json_export_of_every_field_is_lossless_and_stable(characters, spec):
    card = seraphina_with_every_field(spec)
    first = (await characters.post("/api/characters/import", json=card)).json()["data"]
    card_1 = (await characters.get(f"/api/characters/{first['id']}/export")).json()
    assert_keeps(card["data"], card_1["data"])
    second = (await characters.post("/api/characters/import", json=card_1)).json()["data"]
    card_2 = (await characters.get(f"/api/characters/{second['id']}/export")).json()
    for exported in (card_1, card_2):
        exported["data"].pop("modification_date")
    assert card_2 == card_1
    same_fields(first, second)


def same_fields(first: dict, second: dict) -> None:
    """The same character, but for its id and times (and what V3 adds to a V2 book)."""
    fields = [f for f in first if f not in ("id", "created_at", "updated_at", "lorebook")]
    assert {f: second[f] for f in fields} == {f: first[f] for f in fields}
    assert_keeps(first["lorebook"], second["lorebook"])


async def test_png_export_of_every_field_is_lossless(characters):
    card = seraphina_with_every_field("chara_card_v3")
    imported = await characters.post("/api/characters/import", json=card, headers=ALICE)
    character = imported.json()["data"]
    png = (await characters.get(f"/api/characters/{character['id']}/export?format=png")).content
    chunks = png_chunks(png)
    assert chunks["chara"]["spec"] == "chara_card_v2" and chunks["ccv3"]["spec"] == "chara_card_v3"
    for chunk in chunks.values():
        assert_keeps(card["data"], chunk["data"])
    same_fields(character, (await upload(characters, "sera.png", png)).json()["data"])


async def test_edited_fields_win_over_the_kept_card(characters):
    card = seraphina_with_every_field("chara_card_v3")
    character = (await characters.post("/api/characters/import", json=card)).json()["data"]
    path = f"/api/characters/{character['id']}"
    edits = {
        "personality": "stern",
        "alternate_greetings": ["Hello again."],
        "system_prompt": "Be brief.",
        "post_history_instructions": "",
        "nickname": "Phina",
    }
    assert (await characters.patch(path, json=edits)).status_code == 200
    book = {"entries": [{"keys": ["glade"], "content": "The glade is warded."}]}
    assert (await characters.put(f"{path}/lorebook", json=book)).json()["data"] == book
    data = (await characters.get(f"{path}/export")).json()["data"]
    for field, value in edits.items():
        assert data[field] == value, field
    assert data["character_book"]["entries"][0]["content"] == "The glade is warded."
    assert data["description"] == card["data"]["description"]  # untouched: the card's
    assert data["extensions"] == card["data"]["extensions"]

    await characters.patch(path, json={"lorebook": None})
    assert "character_book" not in (await characters.get(f"{path}/export")).json()["data"]


async def test_a_character_imported_before_the_prompt_fields_exports_its_card(characters, redis):
    """Records from before: no prompt fields, persona = description and personality joined."""
    card = seraphina_with_every_field()
    character = (await characters.post("/api/characters/import", json=card)).json()["data"]
    key = f"characters:item:{character['id']}"
    record = json.loads(await redis.get(key))
    new_fields = ("personality", "alternate_greetings", "system_prompt", "nickname", "lorebook")
    for field in (*new_fields, "post_history_instructions"):
        record.pop(field)
        record["imported_fields"].pop(field)
    joined = f"{record['persona']}\n\n{card['data']['personality']}"
    record["persona"] = record["imported_fields"]["persona"] = joined
    await redis.set(key, json.dumps(record))
    path = f"/api/characters/{character['id']}"

    exported = (await characters.get(f"{path}/export")).json()["data"]
    assert_keeps(card["data"], exported)
    assert (await characters.patch(path, json={"persona": "New persona."})).status_code == 200
    exported = (await characters.get(f"{path}/export")).json()["data"]
    assert (exported["description"], exported["personality"]) == ("New persona.", "")
    assert_keeps(card["data"]["character_book"], exported["character_book"])
