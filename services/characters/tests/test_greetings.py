"""GET /api/characters/{id}/greetings: the greeting, then the alternates, with the macros
expanded for the caller (their persona's name, else DEFAULT_USER_NAME); the stored fields
stay raw."""

import json

from avatar_characters.presets import SHIPPED_PRESETS
from tests.helpers import as_user

from .helpers import ALICE, characters_app, persona

BOB = as_user("bob")
MAKER = {
    "name": "Aria",
    "persona": "A wandering bard.",
    "first_message": "Hello {{USER}}, I am {{char}}. {{unknown}} stays.",
    "alternate_greetings": ["<BOT> bows to <user>.", "{{User}}? It's {{Char}}!"],
}


async def own_character(characters, **fields) -> str:
    body = {**MAKER, **fields}
    response = await characters.post("/api/characters", json=body, headers=ALICE)
    assert response.status_code == 201, response.text
    return f"/api/characters/{response.json()['data']['id']}"


async def shown(characters, path: str, headers=ALICE, **query) -> list[dict]:
    response = await characters.get(f"{path}/greetings", params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]["greetings"]


async def test_greetings_come_first_message_first_with_the_default_user_name(characters):
    path = await own_character(characters)
    assert await shown(characters, path, headers=BOB) == [  # readable by anyone
        {"index": 0, "text": "Hello User, I am Aria. {{unknown}} stays."},
        {"index": 1, "text": "Aria bows to User."},
        {"index": 2, "text": "User? It's Aria!"},
    ]


async def test_the_callers_persona_is_user_and_the_nickname_is_char(characters):
    path = await own_character(characters, nickname="Ari")
    created = await characters.post("/api/personas", json=persona("여행자"), headers=ALICE)
    persona_id = created.json()["data"]["id"]
    texts = [g["text"] for g in await shown(characters, path, user_persona_id=persona_id)]
    assert texts == [
        "Hello 여행자, I am Ari. {{unknown}} stays.",
        "Ari bows to 여행자.",
        "여행자? It's Ari!",
    ]


async def test_without_a_persona_named_user_is_the_default_user_name_even_for_a_default(
    characters,
):
    """As chat plays {{user}} for a client that names no persona (its client mode sends the
    messages, not a persona): a greeting shown then kept as the first message greets the
    same user the model is told of. Chat names the default persona a conversation it keeps
    was started with."""
    path = await own_character(characters)
    named = await characters.post("/api/personas", json=persona("기사"), headers=ALICE)
    body = persona("여행자", is_default=True)
    await characters.post("/api/personas", json=body, headers=ALICE)
    texts = [g["text"] for g in await shown(characters, path)]
    assert texts[1] == "Aria bows to User."
    chosen = named.json()["data"]["id"]
    assert [g["text"] for g in await shown(characters, path, user_persona_id=chosen)][1] == (
        "Aria bows to 기사."
    )


async def test_another_callers_persona_is_not_found(characters):
    path = await own_character(characters)
    created = await characters.post("/api/personas", json=persona(), headers=ALICE)
    persona_id = created.json()["data"]["id"]
    for asked in (persona_id, "per_0000000000000000"):
        response = await characters.get(
            f"{path}/greetings", params={"user_persona_id": asked}, headers=BOB
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "persona_not_found"


async def test_a_bad_persona_id_is_422_and_an_unknown_character_404(characters):
    path = await own_character(characters)
    response = await characters.get(f"{path}/greetings", params={"user_persona_id": "a b"})
    assert response.status_code == 422
    response = await characters.get("/api/characters/usr_nobody/greetings")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "character_not_found"


async def test_empty_greetings_are_left_out_and_none_answers_an_empty_list(characters):
    path = await own_character(characters, first_message="", alternate_greetings=["Hi {{user}}"])
    assert await shown(characters, path) == [{"index": 1, "text": "Hi User"}]
    path = await own_character(characters, first_message="", alternate_greetings=[])
    assert await shown(characters, path) == []


async def test_every_preset_greets_with_its_name_and_the_users(characters):
    presets = json.loads(SHIPPED_PRESETS.read_text())
    presets = presets if isinstance(presets, list) else presets["characters"]
    for preset in presets:
        greetings = await shown(characters, f"/api/characters/{preset['id']}")
        assert greetings[0]["index"] == 0 and greetings[0]["text"], preset["id"]
        assert len(greetings) == 1 + len(preset["alternate_greetings"])
        for greeting in greetings:
            assert "{{" not in greeting["text"] and "<USER>" not in greeting["text"]
    hermione = await shown(characters, "/api/characters/hermione")
    assert any("아, User!" in g["text"] for g in hermione)


async def test_the_stored_fields_stay_raw_after_a_greetings_read(characters):
    path = await own_character(characters)
    before = (await characters.get(path)).json()["data"]
    await shown(characters, path)
    after = (await characters.get(path)).json()["data"]
    assert after == before
    assert after["first_message"] == MAKER["first_message"]
    assert after["alternate_greetings"] == MAKER["alternate_greetings"]
    preset = (await characters.get("/api/characters/hermione")).json()["data"]
    await shown(characters, "/api/characters/hermione")
    again = (await characters.get("/api/characters/hermione")).json()["data"]
    assert again == preset and "{{user}}" in again["alternate_greetings"][0]


async def test_the_default_user_name_is_a_setting(app_client, redis_url, presets_file):
    app = characters_app(redis_url, presets_file, default_user_name="나그네")
    async with app_client(app) as client:
        path = await own_character(client)
        assert (await shown(client, path))[1]["text"] == "Aria bows to 나그네."
