"""A character's lorebook: Character Card V2's `character_book`, with V3's additions.

The one model of it, shared by the characters service (which stores, validates, imports and
exports books) and the chat service (which reads a character's book and activates its entries
in a prompt). Fields the specs define are typed and bounded; anything else a card carries
(unknown fields, `extensions` of other frontends) is kept as it came, so an export gives back
what was imported. The spec's optional fields stay optional: what a book leaves out is left
out again when it is written back (`model_dump(exclude_unset=True)`).

Specs: character-card-spec-v2 (`character_book`), character-card-spec-v3 (`use_regex`, string
ids, `@@decorators` at the start of an entry's content).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

MAX_ENTRIES = 500
MAX_KEYS = 64  # per list: keys, secondary_keys
MAX_KEY_CHARS = 200  # a regex key too: a long pattern is refused before it is compiled
MAX_CONTENT_CHARS = 8000
MAX_NAME_CHARS = 200
MAX_SCAN_DEPTH = 100
MAX_TOKEN_BUDGET = 1_000_000

Key = Annotated[str, Field(max_length=MAX_KEY_CHARS)]


class LoreEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: list[Key] = Field(default_factory=list, max_length=MAX_KEYS)
    content: str = Field("", max_length=MAX_CONTENT_CHARS)
    extensions: dict[str, Any] = Field(default_factory=dict)
    enabled: StrictBool = True
    insertion_order: int = 100  # lower first, among the entries of one place
    case_sensitive: StrictBool | None = None
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    priority: int | None = None  # when the budget is short, the lowest goes first
    id: int | str | None = None
    comment: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    selective: StrictBool | None = None  # a secondary key must match too
    secondary_keys: list[Key] = Field(default_factory=list, max_length=MAX_KEYS)
    constant: StrictBool | None = None  # always in
    position: Literal["before_char", "after_char"] | None = None
    use_regex: StrictBool | None = None  # V3: every key is a regular expression

    @property
    def label(self) -> str:
        """How a receipt names the entry: its name, else its comment, else its id."""
        return self.name or self.comment or ("" if self.id is None else str(self.id))


class Lorebook(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_CONTENT_CHARS)
    scan_depth: int | None = Field(None, ge=0, le=MAX_SCAN_DEPTH)
    token_budget: int | None = Field(None, ge=0, le=MAX_TOKEN_BUDGET)
    recursive_scanning: StrictBool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[LoreEntry] = Field(default_factory=list, max_length=MAX_ENTRIES)
