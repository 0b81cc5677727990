"""Stored messages and what steering does to them, as pure functions on the JSON objects the
session list holds (one per message, oldest first):

    {"id", "role": "user"|"assistant", "content", "at", "interrupted": true (only when true),
     "swipes": [{"content", "at", "interrupted"?}, ...], "swipe_id": n,
     "unlearned": true (only when true)}

`swipes` (an assistant message's alternates) is there only once it has more than one; the
top-level `content`, `at` and `interrupted` are then those of the alternate shown,
`swipes[swipe_id]`, so a prompt reads `content` alone. Past MAX_SWIPES alternates, a new one
drops the oldest (never the one shown). Messages stored before ids existed have none: they
are given `m{number}` when read (such sessions are records of a client's history and are not
steered).

`unlearned`: the message was said (or regenerated, continued, edited) while the
conversation's memory was read_only or off, and is never read for memories, whatever the
reading marks say. It is the message's own: an edit, a swipe, a new alternate keep it, a
branch copies it, a delete takes it away; the API and the SillyTavern export never show it.
"""

import json
from typing import Any

from avatar_chat.conversations.ids import new_message_id

Message = dict[str, Any]
ALTERNATE_FIELDS = ("content", "at", "interrupted")


def encode(message: Message) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def new_message(role: str, content: str, at: str, interrupted: bool = False) -> Message:
    message: Message = {"id": new_message_id(), "role": role, "content": content, "at": at}
    if interrupted:
        message["interrupted"] = True
    return message


def _alternate(content: str, at: str, interrupted: bool) -> dict[str, Any]:
    alternate: dict[str, Any] = {"content": content, "at": at}
    if interrupted:
        alternate["interrupted"] = True
    return alternate


def alternates(message: Message) -> list[dict[str, Any]]:
    """Every alternate of a message (one, for a message that was never regenerated)."""
    if "swipes" in message:
        return list(message["swipes"])
    return [_alternate(message["content"], message["at"], bool(message.get("interrupted")))]


def showing(message: Message, swipes: list[dict[str, Any]], index: int) -> Message:
    """`message` with `swipes` as its alternates and the one at `index` shown."""
    shown = {k: v for k, v in message.items() if k not in ("swipes", "swipe_id", "interrupted")}
    shown.update({k: v for k, v in swipes[index].items()})
    if len(swipes) > 1:
        shown["swipes"], shown["swipe_id"] = swipes, index
    return shown


def with_alternate(
    message: Message, content: str, at: str, interrupted: bool, max_swipes: int
) -> Message:
    """A new alternate, shown; past `max_swipes` the oldest goes, never the one the user
    had chosen (the new one is the last)."""
    swipes = [*alternates(message), _alternate(content, at, interrupted)]
    swipes, _ = newest(swipes, message.get("swipe_id", 0), max_swipes)
    return showing(message, swipes, len(swipes) - 1)


def newest(swipes: list[dict[str, Any]], shown: int, most: int) -> tuple[list[dict[str, Any]], int]:
    """At most `most` (2 or more) alternates: the shown one and the newest others, in their
    order; and where the shown one is then."""
    if len(swipes) <= most:
        return swipes, shown
    others = [index for index in range(len(swipes)) if index != shown]
    kept = sorted([shown, *others[len(others) - (most - 1) :]])
    return [swipes[index] for index in kept], kept.index(shown)


def with_swipe(message: Message, index: int) -> Message:
    """The alternate at `index` shown; IndexError when there is none there."""
    swipes = alternates(message)
    if not 0 <= index < len(swipes):
        raise IndexError(index)
    return showing(message, swipes, index)


def with_content(message: Message, content: str) -> Message:
    """The shown text replaced (an edit): an edited reply is no longer cut short."""
    if message["role"] == "user":
        return {**message, "content": content}
    swipes, index = alternates(message), message.get("swipe_id", 0)
    swipes[index] = {**swipes[index], "content": content}
    swipes[index].pop("interrupted", None)
    return showing(message, swipes, index)


def extended(message: Message, more: str, at: str, interrupted: bool) -> Message:
    """The shown alternate continued with `more` (continue); cut short again if this was."""
    swipes, index = alternates(message), message.get("swipe_id", 0)
    swipes[index] = _alternate(swipes[index]["content"] + more, at, interrupted)
    return showing(message, swipes, index)


def public(message: Message, number: int) -> dict[str, Any]:
    """A message as the API shows it (`number`: its position, for messages without an id)."""
    assistant = message["role"] == "assistant"
    return {
        "id": message.get("id") or f"m{number}",
        "role": message["role"],
        "content": message["content"],
        "at": message["at"],
        "interrupted": bool(message.get("interrupted")),
        "swipes": [a["content"] for a in alternates(message)] if assistant else None,
        "swipe_id": message.get("swipe_id", 0) if assistant else None,
    }


def unlearned(message: Message) -> Message:
    """`message` flagged: said while memory was read_only or off, never read for memories."""
    return {**message, "unlearned": True}


def flagged(messages: list[Message]) -> frozenset[int]:
    """The positions of the messages flagged `unlearned` (in `turns(messages)` too)."""
    return frozenset(n for n, m in enumerate(messages) if m.get("unlearned"))


def turns(messages: list[Message]) -> list[dict[str, str]]:
    """What the prompt takes of each message: its role and the text shown."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


TITLE_CHARS = 60  # a title made from the first user message


def title(messages: list[Message]) -> str:
    """A conversation's title when it is given none: its first user message, cut."""
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    return cut(first, TITLE_CHARS)


def preview(messages: list[Message], chars: int = 120) -> str:
    """The last message's text, cut to `chars` (for the conversation list)."""
    return cut(messages[-1]["content"], chars) if messages else ""


def cut(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"
