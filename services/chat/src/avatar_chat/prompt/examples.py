"""Example dialogue (a card's `mes_example`): blocks that each open with `<START>` (anywhere,
even mid-line, as SillyTavern splits them), made of lines that begin with the speaker:
`{{user}}:` or `{{char}}:`, or the names they stand for (`Seraphina:`), as SillyTavern reads
the lines once the macros became names; a line without a speaker goes on the turn before it.
Text before the first `<START>` is a block of its own."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

START = re.compile(r"<START>", re.IGNORECASE)
MACROS = {"user": r"\{\{user\}\}|<USER>", "char": r"\{\{char\}\}|<BOT>"}


@dataclass(frozen=True)
class ExampleTurn:
    role: str  # "user" or "assistant"
    content: str  # still with its macros


def example_blocks(text: str, chars: Iterable[str] = (), user: str = "") -> list[list[ExampleTurn]]:
    """The blocks of `text`, in order, each a list of turns; empty blocks are left out.
    `chars`: the character's names (its name, its nickname), `user`: the user's, which
    open a speaker's line as the macros do."""
    speaker = _speaker(chars, user)
    blocks = [_turns(part, speaker) for part in START.split(text)]
    return [block for block in blocks if block]


def _speaker(chars: Iterable[str], user: str) -> re.Pattern[str]:
    """A line's speaker: the macros in any case; the names as written (SillyTavern compares
    them exactly), the user's first, as there."""
    users = [f"(?i:{MACROS['user']})", *([re.escape(user)] if user else [])]
    names = [f"(?i:{MACROS['char']})", *(re.escape(name) for name in chars if name)]
    return re.compile(rf"^\s*(?:(?P<user>{'|'.join(users)})|(?:{'|'.join(names)}))\s*:\s?")


def _turns(block: str, speaker: re.Pattern[str]) -> list[ExampleTurn]:
    turns: list[ExampleTurn] = []
    for line in block.splitlines():
        found = speaker.match(line)
        if found:
            role = "user" if found.group("user") else "assistant"
            turns.append(ExampleTurn(role, line[found.end() :].strip()))
        elif turns and line.strip():
            last = turns[-1]
            turns[-1] = ExampleTurn(last.role, f"{last.content}\n{line.strip()}")
        elif line.strip():  # text before any speaker: the character's, as frontends read it
            turns.append(ExampleTurn("assistant", line.strip()))
    return turns
