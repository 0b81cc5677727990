"""The memory object of `/api/memories`, and what its writes take."""

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

ID_PREFIX = "mem_"
CHARACTER_ID = r"^[A-Za-z0-9_-]{1,64}$"
# What a fact is about: the kinds the learning call is asked for (a user's own: `other`).
Kind = Literal["name", "relationship", "promise", "preference", "world", "other"]
# `on`: used and learned; `read_only`: used, nothing learned; `off`: neither.
MemoryMode = Literal["on", "read_only", "off"]


# A character a reader sees: not white space (str.strip()'s), a control character, a format
# character (zero-width space, joiners, BOM: Unicode's Cf, those below U+10000) nor a blank
# "letter" (Hangul fillers, the blank Braille pattern). Written out, as SOME_TEXT is, so the
# validator and a client's ECMAScript regex read the same set.
VISIBLE = (
    r"[^\x00-\x20\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f"
    r"\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u2800\u3000"
    r"\u3164\ufeff\uffa0\ufff9-\ufffb]"
)
# Control characters but the line breaks and tabs (the prompt puts a memory on one line).
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"


def _no_control(text: str) -> str:
    if re.search(CONTROL, text):
        raise ValueError("no control characters")
    return text


# A memory's text: something a reader sees, and no control characters.
MemoryText = Annotated[
    str,
    Field(pattern=VISIBLE, json_schema_extra={"not": {"pattern": CONTROL}}),
    AfterValidator(_no_control),
]


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
    text: MemoryText = Field(min_length=1, description="The fact, one sentence.")
    pinned: StrictBool = False


class MemoryChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"minProperties": 1}
    )

    text: MemoryText | None = Field(None, min_length=1)
    pinned: StrictBool | None = None


class MemoryDeleted(BaseModel):
    memory_id: str
    deleted: bool
