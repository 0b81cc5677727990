"""Prompts reshaped for chat templates that insist on alternating turns (a pure function)."""

from avatar_chat.app import create_app
from avatar_chat.prompt.alternation import OPENING, alternating

from .helpers import PERSONA, chat_settings, emulated_llm


def roles(messages: list[dict[str, str]]) -> list[str]:
    return [m["role"] for m in messages]


def test_a_prompt_that_already_alternates_is_left_as_it_is():
    prompt = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]
    assert alternating(prompt) == prompt


def test_depth_lore_and_post_history_become_notes_on_user_turns():
    prompt = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a sword?"},
        {"role": "system", "content": "SWORD lore"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "more"},
        {"role": "system", "content": "Stay brief."},
    ]
    reshaped = alternating(prompt)
    assert roles(reshaped) == ["system", "user", "assistant", "user"]
    assert reshaped[3]["content"] == "[SWORD lore]\n\nmore\n\n[Stay brief.]"


def test_a_greeting_first_gets_an_opening_user_turn_and_same_roles_are_joined():
    prompt = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "Welcome, traveller."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "anyone?"},
    ]
    reshaped = alternating(prompt)
    assert roles(reshaped) == ["system", "user", "assistant", "user"]
    assert reshaped[1]["content"] == OPENING
    assert reshaped[3]["content"] == "hi\n\nanyone?"


async def test_with_the_setting_the_llm_gets_alternating_turns(app_client, redis_url):
    conversation = [
        {"role": "assistant", "content": "어서 와, 여행자."},  # the greeting, first
        {"role": "user", "content": "안녕!"},
    ]
    body = {"messages": conversation, "persona": PERSONA, "tts_enabled": False}
    with emulated_llm("vllm") as backend:
        for setting, expected in ((False, ["system", "assistant", "user"]), (True, None)):
            settings = chat_settings(redis_url, llm_alternate_roles=setting, **backend.settings)
            async with app_client(create_app(settings)) as chat:
                response = await chat.post("/api/chat", json=body)
            assert response.status_code == 200, response.text
            received = backend.recorder.prompts[-1].messages_received
            if expected:
                assert roles(received) == expected  # as built: the greeting first
            else:
                assert roles(received) == ["system", "user", "assistant", "user"]
                assert received[1]["content"] == OPENING
