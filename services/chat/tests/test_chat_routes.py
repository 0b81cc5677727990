"""POST /api/chat and the session endpoints, against both LLM backends' emulators."""

import uuid

import httpx
import pytest

from avatar_chat.app import create_app
from avatar_chat.settings import ChatSettings
from avatar_emulators.replies import count_prompt_tokens, count_tokens
from avatar_emulators.server import serve_in_thread
from avatar_shared.identity import current_identity
from tests.helpers import identity_from_test_header, returning_visitor

from .helpers import PERSONA, ask, chat_settings, emulated_llm, read_events

SCENARIO = {
    "opponent": "헤르미온느 그레인저",
    "situation": "호그와트 도서관",
    "background": "마법 세계",
}


async def test_reply_carries_the_llms_text_and_counts(chat, backend):
    response = await chat.post("/api/chat", json=ask("안녕하세요! 오늘 날씨 어때?"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    prompt = backend.recorder.prompts[-1]
    assert "안녕하세요!" in data["content"]  # the emulator quotes what it was told
    assert data["usage"] == {
        "prompt_tokens": count_prompt_tokens(prompt.messages_used),
        "completion_tokens": count_tokens(data["content"]),
    }
    assert uuid.UUID(data["session_id"]).version == 4
    assert data["audio_url"] is None and data["context_summarized"] is False


async def test_system_message_holds_persona_scenario_and_rules(chat, backend):
    await chat.post("/api/chat", json=ask("hi", scenario=SCENARIO, temperature=1.1))
    prompt = backend.recorder.prompts[-1]
    system = prompt.messages_received[0]
    assert system["role"] == "system"
    for text in (PERSONA, *SCENARIO.values()):
        assert text in system["content"]
    assert "never" in system["content"].lower() and "AI" in system["content"]
    assert [m["role"] for m in prompt.messages_received] == ["system", "user"]
    assert prompt.model == "gemma-3-27b-it"


async def test_session_history_grows_turn_by_turn(chat):
    first = (await chat.post("/api/chat", json=ask("첫 번째"))).json()["data"]
    session_id = first["session_id"]
    conversation = [
        {"role": "user", "content": "첫 번째"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": "두 번째"},
    ]
    body = {"messages": conversation, "persona": PERSONA, "session_id": session_id}
    second = (await chat.post("/api/chat", json=body)).json()["data"]
    assert second["session_id"] == session_id

    history = (await chat.get(f"/api/chat/sessions/{session_id}")).json()["data"]
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("user", "첫 번째"),
        ("assistant", first["content"]),
        ("user", "두 번째"),
        ("assistant", second["content"]),
    ]
    assert history["usage"] == {
        "prompt_tokens": first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"],
        "completion_tokens": first["usage"]["completion_tokens"]
        + second["usage"]["completion_tokens"],
    }
    assert history["model"] == "gemma-3-27b-it"


async def test_a_conversation_ending_with_the_character_asks_it_to_speak_again(chat, backend):
    first = (await chat.post("/api/chat", json=ask("안녕"))).json()["data"]
    conversation = [
        {"role": "user", "content": "안녕"},
        {"role": "assistant", "content": first["content"]},
    ]
    body = {"messages": conversation, "persona": PERSONA, "session_id": first["session_id"]}
    again = await chat.post("/api/chat", json=body)
    assert again.status_code == 200, again.text
    assert backend.recorder.last.messages_received[-1]["role"] == "assistant"
    history = (await chat.get(f"/api/chat/sessions/{first['session_id']}")).json()["data"]
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "assistant"]
    assert history["messages"][-1]["content"] == again.json()["data"]["content"]


async def test_deleted_session_is_gone(chat, redis):
    session_id = (await chat.post("/api/chat", json=ask("hi"))).json()["data"]["session_id"]
    deleted = await chat.delete(f"/api/chat/sessions/{session_id}")
    assert deleted.json()["data"] == {"session_id": session_id, "deleted": True}
    assert (await chat.get(f"/api/chat/sessions/{session_id}")).status_code == 404
    assert (await chat.delete(f"/api/chat/sessions/{session_id}")).status_code == 404
    assert await redis.keys("chat:session*") == []


async def test_unknown_session_is_404(chat):
    response = await chat.get(f"/api/chat/sessions/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def _msgs(*roles: str) -> list[dict]:
    return [{"role": r, "content": "x"} for r in roles]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [], "persona": PERSONA},
        {"messages": _msgs("system", "user"), "persona": PERSONA},
        {"messages": [{"role": "user", "content": ""}], "persona": PERSONA},
        ask("hi", temperature=2.5),
        ask("hi", max_tokens=0),
        ask("hi", max_tokens=4097),
        ask("hi", session_id="not-a-uuid"),
        ask("hi", tts_mode="sometimes"),
        ask("hi", tts_streaming_mode=4),
        ask("hi", character_id="../../etc"),
        ask("hi", unknown_field=1),
        {"messages": _msgs("user")},  # neither persona nor character_id
        {"messages": _msgs(*["user"] * 201), "persona": PERSONA},
        ask("x" * 8001),
        {"messages": [{"role": "user", "content": "x" * 8000}] * 13, "persona": PERSONA},
    ],
)
async def test_bad_requests_get_422_and_change_nothing(chat, backend, redis, body):
    returning_visitor(chat)  # with its cookie: no id is minted (a mint is counted)
    response = await chat.post("/api/chat", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert backend.recorder.prompts == []
    assert await redis.keys("*") == []


async def test_each_delta_leaves_as_it_arrives(redis_url):
    """A paced model's tokens reach the client one by one, each while the model is still
    writing the rest: none is held back for the next."""
    with emulated_llm("ollama", tokens_per_second=20) as backend:
        app = create_app(chat_settings(redis_url, **backend.settings))
        with serve_in_thread(app, lifespan="on") as url:  # a real socket: nothing buffered
            body = ask("천천히 말해줘", stream=True, tts_enabled=False)
            async with (
                httpx.AsyncClient(trust_env=False) as http,
                http.stream("POST", f"{url}/api/chat", json=body) as response,
            ):
                sent_by_each_delta = []
                async for line in response.aiter_lines():
                    if line.startswith("event: delta"):
                        sent_by_each_delta.append(backend.recorder.prompts[-1].tokens_sent)
    # Delta i arrived while the model had sent about i + 1 tokens (a few more at most: the
    # recorder counts ahead of the socket, and a busy machine reads late), never all of them.
    assert len(sent_by_each_delta) > 10
    assert max(sent - index for index, sent in enumerate(sent_by_each_delta)) <= 4


async def test_streamed_deltas_add_up_to_the_done_event(chat):
    body = ask("스트리밍 해줘", stream=True, tts_enabled=False)  # speech: test_chat_speech
    async with chat.stream("POST", "/api/chat", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_events(response)
    kinds = [kind for kind, _ in events]
    # (Lines the emulator sent at once may arrive together, and leave as one delta.)
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 2
    done = events[-1][1]
    assert "".join(data["content"] for _, data in events[:-1]) == done["content"]
    assert set(done) == {
        "content",
        "usage",
        "session_id",
        "audio_url",
        "context_summarized",
        "context_truncated",
        "tts_error",
        "audio_urls",
        "context",  # the receipt of what the model saw
        "message_id",  # the reply, as the session stored it
        "user_message_id",
        "swipe_id",
    }
    assert done["context"]["tokens"]["history"] > 0 and done["context"]["lore"] == []
    history = (await chat.get(f"/api/chat/sessions/{done['session_id']}")).json()["data"]
    assert history["messages"][-1]["content"] == done["content"]


async def test_another_users_session_is_404_over_http(app_client, redis_url, backend):
    app = create_app(ChatSettings(redis_url=redis_url, **backend.settings))

    app.dependency_overrides[current_identity] = identity_from_test_header
    alice, bob = {"X-Test-User": "alice"}, {"X-Test-User": "bob"}
    async with app_client(app) as chat:
        session_id = (await chat.post("/api/chat", json=ask("hi"), headers=alice)).json()["data"][
            "session_id"
        ]
        asked = len(backend.recorder.prompts)
        hijack = await chat.post(
            "/api/chat", json=ask("me too", session_id=session_id), headers=bob
        )
        peek = await chat.get(f"/api/chat/sessions/{session_id}", headers=bob)
        erase = await chat.delete(f"/api/chat/sessions/{session_id}", headers=bob)
        own = await chat.get(f"/api/chat/sessions/{session_id}", headers=alice)
    for response in (hijack, peek, erase):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "session_not_found"
    assert len(backend.recorder.prompts) == asked  # bob's turn never reached the LLM
    assert len(own.json()["data"]["messages"]) == 2
