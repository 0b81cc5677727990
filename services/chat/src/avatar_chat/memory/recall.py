"""Memories at a turn: which the conversation may see, what they are ranked against, and the
part of the system message they make (the prompt builder places it)."""

from dataclasses import dataclass

from avatar_chat.context.summaries import prefix_digests
from avatar_chat.context.tokens import TokenEstimator
from avatar_chat.memory.learning import holds, lineage_origin
from avatar_chat.memory.ranking import MemoryIndex
from avatar_chat.memory.store import Recalled, Remembered

Message = dict[str, str]


def line_of(text: str) -> str:
    """A memory as the prompt lists it: one line whatever its text holds (a line of its own
    could pass for a heading of the system message)."""
    return f"- {' '.join(text.split())}"


@dataclass(frozen=True)
class LineCost:
    """A memory's tokens as the prompt lists it, by a session's calibration. Equal costs for
    equal calibrations: an index keeps the costs it priced for an equal one (`MemoryIndex`
    reprices only for a different cost), so a turn does not price every memory again."""

    calibration: float

    def __call__(self, text: str) -> int:
        return TokenEstimator(self.calibration).text(line_of(text))


def visible(recalled: Recalled, root: str, turns: list[Message]) -> "Visible":
    """The memories a conversation may use: all, but those learned in its own lineage (it,
    the conversation it branched from, their other branches) only while it holds the
    messages they were learned from (`root`: its lineage, `turns`: its messages). A memory
    of another branch's future, or of an edited-away message, stays out."""
    own = [(m, o) for m in recalled.memories if (o := lineage_origin(m, root)) is not None]
    digests = prefix_digests(turns) if own else []  # hashing the conversation only if needed
    hidden = [m for m, origin in own if not holds(0, digests, origin)]
    return Visible(recalled.index, hidden)


@dataclass(frozen=True)
class Visible:
    """The index of a version of the memories, less those this conversation may not see."""

    index: MemoryIndex[Remembered]
    hidden: list[Remembered]

    def choose(self, query: str, budget: int, cost: LineCost) -> list[Remembered]:
        """As `MemoryIndex.choose`, without the hidden ones: the index chooses with their
        room added, and the rest is held to the budget again (rebuilding an index per
        conversation would cost more than the turn)."""
        if not self.hidden:
            return self.index.choose(query, budget, cost)
        ids = {m.id for m in self.hidden}
        room = budget + sum(cost(m.text) for m in self.hidden)
        chosen, left = [], budget
        for memory in self.index.choose(query, room, cost):
            if memory.id in ids or (not memory.pinned and cost(memory.text) > left):
                continue
            left -= 0 if memory.pinned else cost(memory.text)
            chosen.append(memory)
        return chosen


def query(turns: list[Message], messages: int) -> str:
    """What memories are ranked against: the last messages of the conversation."""
    return "\n".join(turn["content"] for turn in turns[-messages:])


def section(chosen: list[Remembered], char: str, user: str) -> str:
    if not chosen:
        return ""
    heading = f"# What {char} remembers about {user}"
    return heading + "\n" + "\n".join(line_of(m.text) for m in chosen)
