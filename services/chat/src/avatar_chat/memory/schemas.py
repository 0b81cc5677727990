"""The memory object of `/api/memories`, and what its writes take."""

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from avatar_shared.json_types import SOME_TEXT

ID_PREFIX = "mem_"
CHARACTER_ID = r"^[A-Za-z0-9_-]{1,64}$"
# What a fact is about: the kinds the learning call is asked for (a user's own: `other`).
Kind = Literal["name", "relationship", "promise", "preference", "world", "other"]
# `on`: used and learned; `read_only`: used, nothing learned; `off`: neither.
MemoryMode = Literal["on", "read_only", "off"]


# Characters that show nothing: format characters (zero-width space, joiners, BOM: category
# Cf) and the blank "letters" (Hangul fillers, the blank Braille pattern).
BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def visible_text(text: str) -> str:
    """A memory's text: no control characters (a line break aside: the prompt puts a memory on
    one line), and something a reader sees."""
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        raise ValueError("no control characters")
    if all(c.isspace() or c in BLANKS or unicodedata.category(c) == "Cf" for c in text):
        raise ValueError("some visible text")
    return text


MemoryText = Annotated[str, AfterValidator(visible_text)]


class Earlier(BaseModel):
    text: str
    until: str = Field(description="When this text was replaced.")


class Memory(BaseModel):
    id: str
    character_id: str
    text: str
    pinned: bool = Field(description="Always in the prompt, whatever the turn is about.")
    source: Literal["user", "learned"] = Field(
        description="`learned`: read from a conversation by the model; `user`: written by you."
    )
    kind: Kind
    key: str | None = Field(
        description="The slot a learned fact fills (`user.name`): a newer fact for it replaces "
        "this one's text, which goes to `history`."
    )
    session_id: str | None = Field(description="The conversation it was learned in.")
    message_id: str | None = Field(description="The last message read when it was learned.")
    history: list[Earlier] = Field(description="Its earlier texts, oldest first.")
    created_at: str
    updated_at: str


class MemoryPage(BaseModel):
    memories: list[Memory]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class NewMemory(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    character_id: str = Field(pattern=CHARACTER_ID, description="Whom it is remembered by.")
    text: MemoryText = Field(
        min_length=1, pattern=SOME_TEXT, description="The fact, one sentence."
    )
    pinned: StrictBool = False


class MemoryChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"minProperties": 1}
    )

    text: MemoryText | None = Field(None, min_length=1, pattern=SOME_TEXT)
    pinned: StrictBool | None = None


class MemoryDeleted(BaseModel):
    memory_id: str
    deleted: bool
