"""Example dialogue (a card's `mes_example`): blocks that each open with `<START>`, made of
lines that begin with the speaker, `{{user}}:` or `{{char}}:`; a line without a speaker goes
on the turn before it. Text before the first `<START>` is a block of its own."""

import re
from dataclasses import dataclass

START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)
SPEAKER = re.compile(r"^\s*(\{\{user\}\}|<USER>|\{\{char\}\}|<BOT>)\s*:\s?", re.IGNORECASE)


@dataclass(frozen=True)
class ExampleTurn:
    role: str  # "user" or "assistant"
    content: str  # still with its macros


def example_blocks(text: str) -> list[list[ExampleTurn]]:
    """The blocks of `text`, in order, each a list of turns; empty blocks are left out."""
    blocks = [_turns(part) for part in START.split(text)]
    return [block for block in blocks if block]


def _turns(block: str) -> list[ExampleTurn]:
    turns: list[ExampleTurn] = []
    for line in block.splitlines():
        found = SPEAKER.match(line)
        if found:
            role = "user" if "user" in found.group(1).lower() else "assistant"
            turns.append(ExampleTurn(role, line[found.end() :].strip()))
        elif turns and line.strip():
            last = turns[-1]
            turns[-1] = ExampleTurn(last.role, f"{last.content}\n{line.strip()}")
        elif line.strip():  # text before any speaker: the character's, as frontends read it
            turns.append(ExampleTurn("assistant", line.strip()))
    return turns
