"""Shared pieces of the LLM emulators (Ollama, OpenAI-compatible): for tests and `make demo` only.

Token rule (fixed, used by every emulator and by tests):
    * ``count_tokens(text)`` is the number of whitespace-separated words in ``text``.
    * A chat prompt costs ``count_tokens(content) + MESSAGE_OVERHEAD_TOKENS`` per message; the
      overhead stands for the role/template markers a real chat template adds.
    * A reply is streamed one word per token, so ``eval_count`` / ``completion_tokens`` always equal
      ``count_tokens(reply)``.

Replies are deterministic: they depend only on the model name, the messages and the temperature,
so tests can assert on them. Stop sequences are honoured as Ollama and vLLM do: the reply ends
before the first stop sequence it holds, and the stop text is not sent (streamed or not).

Structured outputs (Ollama ``format``, OpenAI ``response_format``; see
``avatar_emulators.structured``) are deterministic too, and scripted by the prompt:
    * Every ``[[name=value; name2=value2]]`` in the LAST user message is one scripted item: pairs
      separated by ``;``, split at the first ``=``, name and value stripped (a value holds any
      character but ``;`` and ``]]``; a repeated name: the last counts; an item without pairs
      is skipped). Identical items count once.
    * With a JSON schema, the content is JSON text valid against it. Each array of objects gets
      one object per item, in order; an object's properties come from the item's pairs by name,
      converted to the property's type (integer/number parsed, boolean "true"/"false"; a value
      that does not parse, or an enum value not in the enum, is sent as given, as a misbehaving
      model would). Properties the item does not give, required or optional, get their type's
      default: "" / 0 / false / [] / an object of defaults / null, or the const or first enum
      value. An array of anything else gets each item's first value. With no items, arrays are
      empty (padded to ``minItems`` with defaults; cut at ``maxItems``). A string outside the
      items (e.g. ``summary`` beside ``facts``) is the ordinary reply text (``build_reply``).
    * Without a schema (Ollama ``"json"``, OpenAI ``json_object``) the content is
      ``{"content": <the ordinary reply text>}``, plus ``"items": [{pairs}, ...]`` if there are
      items.
    * The JSON text uses ``json.dumps``' default separators and ``ensure_ascii=False``, so the
      token rule holds (whitespace inside strings other than single spaces is written as a
      JSON escape). The reply cap (``num_predict`` / ``max_tokens``) still cuts it word by
      word: the content is then truncated, invalid JSON, as from a real model that ran out of
      tokens (``done_reason`` / ``finish_reason`` "length"); stop sequences apply as usual.
    * ``PromptRecord.format`` holds the request's ``format`` / ``response_format`` as received.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from avatar_emulators.structured import JsonOutput, structured_content

MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_MODELS: tuple[str, ...] = ("gemma-3-27b-it", "dolphin-2.9-8b")
# A model name every LLM emulator accepts: it streams a few tokens, then reports an error in-band.
ERROR_MIDSTREAM_MODEL = "emulator-error-midstream"
ERROR_MIDSTREAM_AFTER_TOKENS = 3
ERROR_MIDSTREAM_MESSAGE = "emulator: injected failure in the middle of the stream"
# A model name every LLM emulator accepts (served only where listed, e.g. `--model`): its
# reply is LONG_REPLY_WORDS words of LONG_REPLY_WORD_CHARS characters each (up to max_tokens
# of them), megabytes when streamed, for tests of clients that stop reading and of line caps.
LONG_REPLY_MODEL = "emulator-long-reply"
LONG_REPLY_WORDS = 4096
LONG_REPLY_WORD_CHARS = 8192

Message = dict[str, Any]


def count_tokens(text: str) -> int:
    """Count tokens with the emulators' fixed rule: one token per whitespace-separated word."""
    return len(text.split())


def message_text(message: Message) -> str:
    """Text of a message; OpenAI allows a list of content parts, of which only text counts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: Sequence[Message]) -> int:
    """Prompt size under the token rule: words of every message plus a per-message overhead."""
    return sum(count_tokens(message_text(m)) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def validate_messages(raw: Any) -> list[Message]:
    """Check the shape of a chat `messages` array; raises ValueError with a client-facing text."""
    if not isinstance(raw, list):
        raise ValueError("messages must be an array")
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{index}] must be an object")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}].role must be a string")
        if message.get("content") is not None and not isinstance(message["content"], str | list):
            raise ValueError(f"messages[{index}].content must be a string or an array")
    return raw


def fit_to_context(messages: Sequence[Message], num_ctx: int) -> tuple[list[Message], int]:
    """Drop the oldest non-system messages until the prompt fits in `num_ctx` tokens.

    Mirrors Ollama's silent truncation: system messages and the last message are always kept,
    even if the prompt still does not fit. Returns the kept messages and how many were dropped.
    """
    kept = list(messages)
    dropped = 0
    while count_prompt_tokens(kept) > num_ctx:
        oldest = next((i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"), None)
        if oldest is None:
            break
        del kept[oldest]
        dropped += 1
    return kept, dropped


def _first_words(text: str, limit: int) -> str:
    words = text.split()
    suffix = " ..." if len(words) > limit else ""
    return " ".join(words[:limit]) + suffix


def last_user_text(messages: Sequence[Message]) -> str:
    """Text of the last user message ("" when there is none)."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return message_text(last_user) if last_user else ""


def build_reply(messages: Sequence[Message], model: str, temperature: float | None) -> str:
    """A deterministic, several-sentence reply that visibly depends on the input (for
    LONG_REPLY_MODEL, a long run of long words)."""
    if model == LONG_REPLY_MODEL:
        return " ".join(
            f"{n:05d}".ljust(LONG_REPLY_WORD_CHARS, "x") for n in range(LONG_REPLY_WORDS)
        )
    user_text = last_user_text(messages)
    system = next((m for m in messages if m.get("role") == "system"), None)
    persona = _first_words(message_text(system), 8) if system else ""
    last_words = user_text.split()[-6:]

    sentences = [
        f"This reply comes from the Avatar Forge emulator for model {model}, "
        "not from a real language model.",
        f'You said: "{_first_words(user_text, 24)}".' if user_text else "You said nothing yet.",
        f'Read backwards, your last words are: "{" ".join(reversed(last_words))}".'
        if last_words
        else "There are no words to read backwards.",
        f'I am playing the persona that begins "{persona}".'
        if persona
        else "No system prompt was given, so I have no persona.",
        f"The conversation has {len(messages)} messages and the requested temperature is "
        f"{'the default' if temperature is None else temperature}.",
        "Use this text only for tests and demos.",
    ]
    # Normalise whitespace so that joining the streamed tokens reproduces the reply exactly.
    return " ".join(" ".join(sentences).split())


def lengthened(reply: str, words: int) -> str:
    """`reply` cut or repeated, word by word, to exactly `words` words (0: as it is)."""
    if words <= 0:
        return reply
    own = reply.split()
    return " ".join(own[i % len(own)] for i in range(words))


def make_reply(
    messages: Sequence[Message],
    model: str,
    temperature: float | None,
    reply_words: int = 0,
    output: JsonOutput | None = None,
) -> str:
    """The whole reply before stop sequences and the token cap: the deterministic text
    (lengthened to `reply_words`), or the JSON that `output` asks for, built around it."""
    reply = lengthened(build_reply(messages, model, temperature), reply_words)
    if output is None:
        return reply
    return structured_content(output, reply, last_user_text(messages))


def parse_stop(value: Any) -> list[str]:
    """A `stop` field: one string or an array of strings (absent: none); raises ValueError."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("stop must be a string or an array of strings")
    return [s for s in value if s]


def cut_at_stop(reply: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """The reply up to the earliest stop sequence in it (left out), and the one that matched."""
    found = [(reply.find(s), s) for s in stop if s in reply]
    if not found:
        return reply, None
    index, matched = min(found)
    return reply[:index], matched


def split_reply(reply: str) -> list[str]:
    """Split a reply into stream tokens (one per word, each but the first with a leading space)."""
    words = reply.split()
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def limit_tokens(tokens: list[str], max_tokens: int | None) -> tuple[list[str], bool]:
    """Cap the reply at `max_tokens` (None or <= 0 means no cap); also says whether it was cut."""
    if max_tokens is None or max_tokens <= 0 or len(tokens) <= max_tokens:
        return tokens, False
    return tokens[:max_tokens], True


async def wait_before_token(
    index: int, first_token_latency_s: float, tokens_per_second: float
) -> None:
    """Simulate generation speed: a latency before the first token, then a fixed token rate."""
    if index == 0:
        delay = first_token_latency_s
    else:
        delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
    if delay > 0:
        await asyncio.sleep(delay)


async def wait_for_whole_reply(
    n_tokens: int, first_token_latency_s: float, tokens_per_second: float
) -> None:
    """Non-streaming answers take as long as streaming them would have."""
    delay = first_token_latency_s
    if tokens_per_second > 0:
        delay += max(n_tokens - 1, 0) / tokens_per_second
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass
class PromptRecord:
    """One chat request as an emulator saw it, for tests to assert on."""

    model: str
    messages_received: list[Message]
    messages_used: list[Message]
    dropped: int
    prompt_tokens: int
    options: dict[str, Any]
    stream: bool
    # Content tokens actually sent when streaming: a reader that went away stops the count,
    # which lets tests see that a client's disconnect reached the emulator.
    tokens_sent: int = 0
    # The sampling controls received, under the server's own names (Ollama: from `options`;
    # OpenAI-compatible: top-level fields); those not sent are absent.
    sampling: dict[str, Any] = field(default_factory=dict)
    # The structured-output request as received (Ollama: `format`; OpenAI-compatible:
    # `response_format`); None when the request had none.
    format: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PromptRecorder:
    """Keeps every prompt an emulator received (in memory, in arrival order)."""

    prompts: list[PromptRecord] = field(default_factory=list)

    def record(self, prompt: PromptRecord) -> None:
        self.prompts.append(prompt)

    def clear(self) -> None:
        self.prompts.clear()

    @property
    def last(self) -> PromptRecord:
        """The latest prompt received (IndexError when there is none)."""
        return self.prompts[-1]


@dataclass
class ChatEmulatorConfig:
    """Settings shared by the LLM emulators."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    first_token_latency_s: float = 0.0
    tokens_per_second: float = 0.0  # 0 = no delay between tokens
    # When set, every reply is this many words long (for benchmarks of long streams).
    reply_words: int = 0
    # When set, every inference request fails with this HTTP status (failure injection).
    fail_status: int | None = None
    recorder: PromptRecorder = field(default_factory=PromptRecorder)
