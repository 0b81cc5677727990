"""Context summarization, end to end against the LLM emulators with a small window: the
emulator records every prompt it receives and counts its tokens by its own rule."""

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from avatar_chat.app import create_app
from avatar_chat.context.planner import SUMMARY_INSTRUCTIONS
from avatar_chat.settings import ChatSettings
from avatar_devstack.stack import free_port
from avatar_emulators.replies import PromptRecord, PromptRecorder, count_prompt_tokens

from .conftest import emulated_llm
from .test_chat_routes import read_events

WINDOW = 1200
KEEP = 16
PERSONA = "A cheerful librarian who remembers every reader's favourite books."
SUMMARY_MARK = SUMMARY_INSTRUCTIONS.split("\n", 1)[0]
NEW_PART = "New part of the conversation:\n"


def settings_for(redis_url: str, backend, **overrides: Any) -> ChatSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "tts_url": f"http://127.0.0.1:{free_port()}",
        "characters_url": f"http://127.0.0.1:{free_port()}",
        "chat_rate_per_min": 10_000,
        "llm_context_tokens": WINDOW,
        "keep_recent_turns": KEEP,
        "summary_max_tokens": 64,
        **backend.settings,
    }
    return ChatSettings(**(values | overrides))


def user_line(i: int) -> str:
    return f"Turn {i}: today my favourite number is {i} and I would like a book about it please"


def is_summary_call(record: PromptRecord) -> bool:
    return record.messages_received[0]["content"].startswith(SUMMARY_MARK)


def transcript(record: PromptRecord) -> list[str]:
    """The turns a summary call was asked to fold in, one line each."""
    return record.messages_received[-1]["content"].split(NEW_PART, 1)[1].split("\n")


def as_line(turn: dict[str, str]) -> str:
    return f"{'User' if turn['role'] == 'user' else 'Character'}: {turn['content']}"


@dataclass
class Conversation:
    """A client that sends the whole conversation every time, as the frontend does."""

    chat: Any
    recorder: PromptRecorder
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    turns: list[dict[str, str]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    # Per request: the emulator records it caused (summary calls first, then the chat call).
    calls: list[list[PromptRecord]] = field(default_factory=list)

    async def say(self, text: str) -> dict[str, Any]:
        self.turns.append({"role": "user", "content": text})
        return await self.resend()

    async def resend(self) -> dict[str, Any]:
        """Sends the conversation as it stands; records the reply as the next turn."""
        before = len(self.recorder.prompts)
        response = await self.chat.post("/api/chat", json=self.body())
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        self.calls.append(self.recorder.prompts[before:])
        self.replies.append(data)
        if self.turns[-1]["role"] == "user":
            self.turns.append({"role": "assistant", "content": data["content"]})
        return data

    def body(self) -> dict[str, Any]:
        last_user = max(i for i, t in enumerate(self.turns) if t["role"] == "user")
        return {
            "messages": self.turns[: last_user + 1],
            "persona": PERSONA,
            "session_id": self.session_id,
            "max_tokens": 40,
            "tts_enabled": False,
        }


async def conversation_of(length: int, chat: Any, recorder: PromptRecorder) -> Conversation:
    talk = Conversation(chat, recorder)
    for i in range(length):
        await talk.say(user_line(i))
    return talk


async def test_a_long_conversation_stays_in_the_window_and_each_turn_is_summarized_once(
    app_client, redis_url
):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(60):
                await talk.say(user_line(i))
            session = (await chat.get(f"/api/chat/sessions/{talk.session_id}")).json()["data"]
            retried = await talk.resend()  # the same conversation again: a cache hit

    records = backend.recorder.prompts
    for record in records:  # nothing the model was sent was over its window
        assert record.dropped == 0
        assert record.options["num_ctx"] == WINDOW
        sent = count_prompt_tokens(record.messages_received)
        assert sent + record.options["num_predict"] <= WINDOW

    flags = [reply["context_summarized"] for reply in talk.replies[:60]]
    made_summaries = [any(is_summary_call(r) for r in calls) for calls in talk.calls[:60]]
    assert flags == made_summaries
    assert 3 <= sum(flags) < 30, "summaries come in blocks of aged turns, not every turn"
    assert not any(reply["context_truncated"] for reply in talk.replies)

    for request, calls in enumerate(talk.calls[:60]):
        chat_call = calls[-1]
        sent_turns = chat_call.messages_received[1:]
        conversation = talk.turns[: 2 * request + 1]
        assert sent_turns == conversation[-len(sent_turns) :]
        assert len(sent_turns) >= min(KEEP, len(conversation))  # the recent ones verbatim

    summarized = [line for r in records if is_summary_call(r) for line in transcript(r)]
    covered = session["summary"]["covered_turns"]
    assert summarized == [as_line(t) for t in talk.turns[:covered]]  # each one exactly once
    assert session["summary"]["content"] in talk.calls[59][-1].messages_received[0]["content"]
    assert session["last_prompt_tokens"] == talk.replies[59]["usage"]["prompt_tokens"]

    assert retried["context_summarized"] is False
    assert not any(is_summary_call(r) for r in talk.calls[60])


async def test_editing_an_early_turn_makes_the_summary_stale(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = await conversation_of(30, chat, backend.recorder)
            old_system = talk.calls[-1][-1].messages_received[0]["content"]
            old_summary = old_system.split("# What happened so far\n")[1]
            assert any(r["context_summarized"] for r in talk.replies)
            talk.turns[2] = {"role": "user", "content": "Turn 2: actually I prefer poetry"}
            edited = await talk.say("Did you note my change of mind?")

    assert edited["context_summarized"] is True
    summary_calls = [r for r in talk.calls[-1] if is_summary_call(r)]
    rebuilt = [line for r in summary_calls for line in transcript(r)]
    assert rebuilt[0] == as_line(talk.turns[0])  # from the start: no prefix still matched
    assert "User: Turn 2: actually I prefer poetry" in rebuilt
    assert old_summary not in talk.calls[-1][-1].messages_received[0]["content"]


async def test_a_client_that_goes_back_still_gets_its_recent_turns_verbatim(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = await conversation_of(30, chat, backend.recorder)
            went_back = talk.turns[:45]  # turn 22 of 30: newer summaries exist
            talk.turns = list(went_back)
            await talk.resend()

    sent = talk.calls[-1][-1].messages_received[1:]
    assert len(sent) >= KEEP and sent == went_back[-len(sent) :]


async def test_a_failed_summary_drops_old_turns_and_is_retried_next_time(app_client, redis_url):
    # The model takes 0.3 s to answer; summarizing may take only 0.1 s at first.
    with emulated_llm("ollama", first_token_latency_s=0.3) as backend:
        impatient = settings_for(redis_url, backend, summary_timeout_s=0.1)
        async with app_client(create_app(impatient)) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(20):  # summaries are due from turn 12 on, and all fail
                await talk.say(user_line(i))
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk.chat = chat
            recovered = await talk.say(user_line(20))

    failed = talk.replies[:20]
    assert not any(reply["context_summarized"] for reply in failed)
    assert all(reply["content"] for reply in failed)  # the chat itself never failed
    truncated = [i for i, reply in enumerate(failed) if reply["context_truncated"]]
    assert truncated and truncated == list(range(truncated[0], 20))  # once over, always over
    for i in truncated:
        sent = talk.calls[i][-1].messages_received
        assert count_prompt_tokens(sent) + 40 <= WINDOW
        assert sent[1]["role"] == "user" and sent[-1]["content"] == user_line(i)
        assert len(sent) - 1 < 2 * i + 1  # the oldest turns were left out
    assert recovered["context_summarized"] is True and recovered["context_truncated"] is False


def long_history(talk: "Conversation", exchanges: int) -> None:
    """The client's own long history, new to the server, ending with the user's turn."""
    for i in range(exchanges):
        talk.turns += [
            {"role": "user", "content": user_line(i)},
            {"role": "assistant", "content": f"Noted, number {i}, a fine choice " * 4},
        ]
    talk.turns.append({"role": "user", "content": user_line(exchanges)})


async def test_a_streamed_reply_reports_its_summary_in_the_done_event(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 20)
            async with chat.stream("POST", "/api/chat", json=talk.body() | {"stream": True}) as r:
                events = await read_events(r)

    assert [kind for kind, _ in events][-1] == "done"
    assert events[-1][1]["context_summarized"] is True
    assert any(is_summary_call(record) for record in backend.recorder.prompts)


async def test_two_requests_of_one_session_at_once_summarize_once(app_client, redis_url):
    with emulated_llm("ollama", first_token_latency_s=0.2) as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            talk = Conversation(chat, backend.recorder)
            long_history(talk, 20)
            first, second = await asyncio.gather(
                chat.post("/api/chat", json=talk.body()), chat.post("/api/chat", json=talk.body())
            )

    flags = sorted(r.json()["data"]["context_summarized"] for r in (first, second))
    assert flags == [False, True]
    summarized = [
        line for r in backend.recorder.prompts if is_summary_call(r) for line in transcript(r)
    ]
    assert len(summarized) == len(set(summarized)) > 0  # no turn was summarized twice


@pytest.mark.parametrize("backend_name", ["ollama", "vllm"])
async def test_a_smaller_trained_length_wins_over_the_setting(app_client, redis_url, backend_name):
    trained = {"context_length": 900} if backend_name == "ollama" else {"max_model_len": 900}
    with emulated_llm(backend_name, **trained) as backend:
        settings = settings_for(redis_url, backend, llm_context_tokens=8192)
        async with app_client(create_app(settings)) as chat:
            talk = Conversation(chat, backend.recorder)
            for i in range(16):
                await talk.say(user_line(i))

    assert any(reply["context_summarized"] for reply in talk.replies)
    for record in backend.recorder.prompts:
        assert count_prompt_tokens(record.messages_received) + 64 <= 900
        if backend_name == "ollama":
            assert record.options["num_ctx"] == 900


async def test_a_reply_that_cannot_fit_the_window_is_refused_up_front(app_client, redis_url):
    with emulated_llm("ollama") as backend:
        async with app_client(create_app(settings_for(redis_url, backend))) as chat:
            body = {
                "messages": [{"role": "user", "content": "hello"}],
                "persona": PERSONA,
                "max_tokens": 2000,
            }
            response = await chat.post("/api/chat", json=body)

    assert response.status_code == 422
    assert "context window of 1200" in response.json()["error"]["message"]
    assert backend.recorder.prompts == []
