"""SillyTavern's own default card, Seraphina, end to end through the gateway: imported (the
JSON of its PNG: the test stack's gateway takes bodies of 64 KiB at most), played with a user
persona, and what the LLM emulator received is the whole card."""

import json

import httpx

from avatar_devstack.stack import Stack
from tests.helpers import seraphina_card


async def llm_prompts(stack: Stack) -> list[dict]:
    async with httpx.AsyncClient(trust_env=False) as llm:
        return (await llm.get(f"{stack.emulator_url('ollama')}/_emulator/prompts")).json()


async def forget_prompts(stack: Stack) -> None:
    async with httpx.AsyncClient(trust_env=False) as llm:
        await llm.delete(f"{stack.emulator_url('ollama')}/_emulator/prompts")


async def test_seraphinas_whole_card_reaches_the_model(stack, gateway):
    origin = {"Origin": stack.env["PUBLIC_BASE_URL"]}
    upload = {"file": ("Seraphina.json", json.dumps(seraphina_card()), "application/json")}
    imported = await gateway.post("/api/characters/import", files=upload, headers=origin)
    assert imported.status_code == 201, imported.text
    seraphina = imported.json()["data"]
    # Seraphina's card has no system prompt, post-history instructions or examples: add some.
    edits = {
        "system_prompt": "{{original}}\nThis is a story set in Eldoria.",
        "post_history_instructions": "Answer as {{char}}, briefly, to <USER>. {{original}}",
        "sample_dialogue": "<START>\n{{user}}: Who are you?\n{{char}}: I am {{char}}.",
        "generation": {"temperature": 0.3, "top_p": 0.8, "stop": ["###"]},
    }
    patched = await gateway.patch(f"/api/characters/{seraphina['id']}", json=edits, headers=origin)
    assert patched.status_code == 200, patched.text
    persona = await gateway.post(
        "/api/personas",
        json={"name": "Mina", "description": "A lost traveller in {{char}}'s glade."},
        headers=origin,
    )
    assert persona.status_code == 201, persona.text

    await forget_prompts(stack)
    body = {
        "messages": [{"role": "user", "content": "Hello. Where am I?"}],
        "character_id": seraphina["id"],
        "user_persona_id": persona.json()["data"]["id"],
        "tts_enabled": False,
    }
    quiet = await gateway.post("/api/chat", json=body)
    assert quiet.status_code == 200, quiet.text
    assert quiet.json()["data"]["context"]["lore"] == []
    [asked] = await llm_prompts(stack)
    system, *conversation, last = asked["messages_received"]
    assert system["role"] == "system"
    assert "You are role-playing the character" in system["content"]  # {{original}}
    assert "This is a story set in Eldoria." in system["content"]
    assert "# Character: Seraphina" in system["content"]
    assert '[Seraphina\'s Personality= "caring"' in system["content"]  # her description
    assert "# The user: Mina\nA lost traveller in Seraphina's glade." in system["content"]
    assert "Mina: Who are you?\nSeraphina: I am Seraphina." in system["content"]
    assert "Eldoria is here, all of the woods" not in system["content"]  # no forest yet
    assert "{{" not in system["content"] and "<USER>" not in system["content"]
    assert conversation == [{"role": "user", "content": "Hello. Where am I?"}]
    assert last["role"] == "system"  # post-history instructions, {{original}} our rules
    assert last["content"].startswith("Answer as Seraphina, briefly, to Mina. You are role-")
    # The character's generation defaults, and the stop before a line of the user's.
    assert asked["options"]["temperature"] == 0.3
    assert asked["sampling"] == {"top_p": 0.8, "stop": ["\nMina:", "###"]}

    await forget_prompts(stack)
    body["messages"] = [
        *body["messages"],
        {"role": "assistant", "content": quiet.json()["data"]["content"]},
        {"role": "user", "content": "Tell me about this forest."},
    ]
    forest = await gateway.post("/api/chat", json=body | {"top_p": 0.5, "temperature": 0.9})
    assert forest.status_code == 200, forest.text
    receipt = forest.json()["data"]["context"]
    assert [(e["index"], e["key"], e["place"]) for e in receipt["lore"]] == [
        (0, "forest", "before_char")
    ]
    assert receipt["tokens"]["lore"] > 0 and receipt["tokens"]["examples"] > 0
    [asked] = await llm_prompts(stack)
    assert "Eldoria is here, all of the woods" in asked["messages_received"][0]["content"]
    assert asked["options"]["temperature"] == 0.9 and asked["sampling"]["top_p"] == 0.5
    assert asked["messages_received"][-1]["content"].startswith("Answer as Seraphina")


async def test_the_seeds_request_names_the_character_with_opponent(stack, gateway):
    await forget_prompts(stack)
    body = {
        "messages": [{"role": "user", "content": "안녕!"}],
        "persona": "밝고 명랑한 10대 소녀 캐릭터. 반말을 사용하며 귀엽게 말함.",
        "character_id": "hermione",
        "scenario": {"opponent": "헤르미온느 그레인저", "situation": "호그와트 도서관에서 만남"},
        "tts_enabled": False,
    }
    response = await gateway.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    [asked] = await llm_prompts(stack)
    system = asked["messages_received"][0]["content"]
    assert "# Character: 헤르미온느 그레인저\n밝고 명랑한 10대 소녀" in system  # persona wins
    assert "Your name on the user's screen: 헤르미온느 그레인저" in system
    assert "talking with" not in system
    assert "- Situation: 호그와트 도서관에서 만남" in system
