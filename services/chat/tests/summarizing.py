"""What the summarization tests share: a chat app with a small window over an LLM emulator,
and a conversation that grows turn by turn."""

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from avatar_chat.context.planner import SUMMARY_INSTRUCTIONS
from avatar_chat.settings import ChatSettings
from avatar_devstack.ports import free_port
from avatar_emulators.replies import PromptRecord, PromptRecorder

WINDOW = 1200
KEEP = 16
PERSONA = "A cheerful librarian who remembers every reader's favourite books."
SUMMARY_MARK = SUMMARY_INSTRUCTIONS.split("\n", 1)[0]
NEW_PART = "New part of the conversation:\n"
SUMMARY_HEADING = "# What happened so far\n"


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


async def summary_count(chat: Any, when: str, outcome: str) -> float:
    """avatar_chat_summaries_total{when=..., outcome=...} from the app's /metrics."""
    text = (await chat.get("/metrics")).text
    pattern = rf'avatar_chat_summaries_total\{{outcome="{outcome}",when="{when}"\}} (\S+)'
    found = re.search(pattern, text) or re.search(
        rf'avatar_chat_summaries_total\{{when="{when}",outcome="{outcome}"\}} (\S+)', text
    )
    return float(found.group(1)) if found else 0.0


def user_line(i: int) -> str:
    return f"Turn {i}: today my favourite number is {i} and I would like a book about it please"


def is_summary_call(record: PromptRecord) -> bool:
    return record.messages_received[0]["content"].startswith(SUMMARY_MARK)


async def summary_calls_started(recorder: PromptRecorder, n: int) -> bool:
    """Whether `n` summary calls have reached the LLM (waited for, 10 s at most)."""
    for _ in range(1000):
        if len(summary_calls(recorder)) >= n:
            return True
        await asyncio.sleep(0.01)
    return False


def summary_calls(recorder: PromptRecorder) -> list[PromptRecord]:
    return [r for r in recorder.prompts if is_summary_call(r)]


async def idle(recorder: PromptRecorder, seconds: float = 1.5) -> None:
    """Waits until no call has reached the LLM for `seconds` (background work started)."""
    seen = -1
    while seen != len(recorder.prompts):
        seen = len(recorder.prompts)
        await asyncio.sleep(seconds)


def summary_in(record: PromptRecord) -> str | None:
    """The summary a chat call's system message carries (None: none)."""
    parts = record.messages_received[0]["content"].split(SUMMARY_HEADING, 1)
    return parts[1] if len(parts) == 2 else None


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
    # Per request: the emulator records made while it ran (summary calls, its own or made
    # in the background, and its chat call).
    calls: list[list[PromptRecord]] = field(default_factory=list)

    def chat_call(self, request: int) -> PromptRecord:
        """What the model was sent for the reply of `request`."""
        return next(r for r in reversed(self.calls[request]) if not is_summary_call(r))

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


def long_history(talk: "Conversation", exchanges: int) -> None:
    """The client's own long history, new to the server, ending with the user's turn."""
    for i in range(exchanges):
        talk.turns += [
            {"role": "user", "content": user_line(i)},
            {"role": "assistant", "content": f"Noted, number {i}, a fine choice " * 4},
        ]
    talk.turns.append({"role": "user", "content": user_line(exchanges)})
