"""The character object of API.md, and the limits every write must respect."""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from avatar_shared.envelope import Envelope
from avatar_shared.json_types import SOME_TEXT, JsonInt, check_json_shape
from avatar_shared.lorebook import (
    MAX_SCAN_DEPTH,
    MAX_TOKEN_BUDGET,
    STORED,
    Lorebook,
    LoreLeftOut,
    LoreUsed,
)
from avatar_shared.sampling import GenerationDefaults

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_TAGS, MAX_TAG_CHARS = 20, 30
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS, pattern=SOME_TEXT)]
MAX_GREETINGS, MAX_PROMPT_CHARS = 20, 4000
Greeting = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=SOME_TEXT)]

# A lorebook as it was sent: the fields it set and nothing else (no nulls for what it left
# out), so what is stored, answered and exported is the book that came in. (The serializer
# has no return annotation on purpose: the document then keeps describing a Lorebook.)
StoredBook = Annotated[
    Lorebook,
    PlainSerializer(lambda book, info: book.model_dump(mode=info.mode, exclude_unset=True)),
]


def _storable(book: Any) -> Any:
    """A book's extensions and extra fields take any JSON: what is too deep for pydantic's
    serializer or holds NaN could be stored but never answered (or exported) again."""
    check_json_shape(book, "a lorebook")
    return book


# A lorebook a client sends. (Not checked on reads: a book stored before the check keeps
# being answered.)
SentBook = Annotated[StoredBook, BeforeValidator(_storable)]


def empty_book() -> Lorebook:
    return Lorebook(entries=[])  # set, so that it is answered as {"entries": []}


# An http(s) URL or a site-relative path; empty clears it. No control characters: a NUL
# breaks every file path made of it (the PNG export reads local images).
_CONTROL = r"\x00-\x1f\x7f"
IMAGE_URL = rf"^(|https?://[^{_CONTROL}]+|/([^/{_CONTROL}][^{_CONTROL}]*)?)$"


def _empty_is_none(value: str | None) -> str | None:
    return value or None


class CharacterFields(BaseModel):
    """The editable fields (POST and PUT take them all; PATCH any subset)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, pattern=SOME_TEXT)
    persona: str = Field(min_length=1, max_length=8000, pattern=SOME_TEXT)
    voice_id: str = Field("default", pattern=SLUG)
    description: str = Field("", max_length=2000)
    category: str = Field("", max_length=50)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    sample_dialogue: str = Field("", max_length=4000)
    image_url: str | None = Field(None, max_length=2000, pattern=IMAGE_URL)
    # The rest of a Character Card's prompt fields (API.md, "Role-play prompt"); the chat
    # service reads them from GET /api/characters/{id}. Not in the character object of
    # API.md: a PUT that leaves them out keeps their values (see CharacterService.replace).
    scenario: str = Field("", max_length=MAX_PROMPT_CHARS)
    first_message: str = Field("", max_length=MAX_PROMPT_CHARS)  # the card's first_mes
    personality: str = Field("", max_length=MAX_PROMPT_CHARS)
    alternate_greetings: list[Greeting] = Field(default_factory=list, max_length=MAX_GREETINGS)
    system_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    post_history_instructions: str = Field("", max_length=MAX_PROMPT_CHARS)
    nickname: str = Field("", max_length=100)  # V3: {{char}} when set
    lorebook: SentBook | None = None  # the card's character_book
    # Generation controls chat uses where a request leaves them out (not part of a card).
    generation: GenerationDefaults | None = None

    _image_url = field_validator("image_url")(_empty_is_none)


IGNORED = "Read-only: taken and ignored, so that the object GET answered may be sent back."


class OwnedSentBack(BaseModel):
    """The read-only keys of an owned record (a character, a user persona). A client may PUT
    (or PATCH) the object GET answered, edited: these are taken, checked for their type, and
    change nothing."""

    id: str | None = Field(None, description=IGNORED)
    owner: str | None = Field(None, description=IGNORED)
    created_at: str | None = Field(None, description=IGNORED)
    updated_at: str | None = Field(None, description=IGNORED)


class SentBack(OwnedSentBack):
    """The read-only keys of API.md's character object."""

    is_preset: bool | None = Field(None, description=IGNORED)


READ_ONLY_FIELDS = set(SentBack.model_fields)


class CharacterReplacement(CharacterFields, SentBack):
    """PUT's body: every editable field, and the read-only ones if sent back (ignored)."""


CARD_ONLY_FIELDS = (
    "scenario",
    "first_message",
    "personality",
    "alternate_greetings",
    "system_prompt",
    "post_history_instructions",
    "nickname",
    "lorebook",
    "generation",
)


def max_length(field: str) -> int:
    """A text field's limit, read from CharacterFields: the one place limits are set."""
    limit: int = next(
        m.max_length
        for m in CharacterFields.model_fields[field].metadata
        if hasattr(m, "max_length")
    )
    return limit


def _patch_field(field: FieldInfo) -> tuple[Any, None]:
    """The field with the same type and limits, but optional (null only where the type
    allows it: `image_url`, where it means "none")."""
    if not field.metadata:
        return field.annotation, None
    return Annotated[field.annotation, *field.metadata], None


# Any subset of the editable fields, each with the limits of CharacterFields; the character
# that results is validated whole again (see CharacterService).
if TYPE_CHECKING:  # what create_model makes, as the type checker cannot see its fields

    class CharacterPatch(BaseModel): ...

else:
    CharacterPatch = create_model(
        "CharacterPatch",
        __config__=ConfigDict(extra="forbid", str_strip_whitespace=True),
        __validators__={"_image_url": field_validator("image_url")(_empty_is_none)},
        **{name: _patch_field(f) for name, f in CharacterFields.model_fields.items()},
        **{name: (f.annotation, f) for name, f in SentBack.model_fields.items()},
    )


class Character(CharacterFields):
    model_config = ConfigDict(extra="ignore")  # stored extras (the raw card) stay inside

    lorebook: StoredBook | None = None  # as stored (see SentBook)
    image_url: str | None = None  # as stored: one taken before IMAGE_URL refused more
    id: str
    is_preset: bool
    owner: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class CharacterPage(BaseModel):
    characters: list[Character]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class Deleted(BaseModel):
    id: str
    deleted: bool


class LorebookEnvelope(Envelope[StoredBook]):
    """A lorebook answered as it is stored (named, where Envelope[StoredBook] would be named
    after its serializer)."""

    @classmethod
    def of(cls, book: Lorebook) -> "LorebookEnvelope":
        """`book`, checked already (pydantic runs its validator again on a model it is
        given): its regex keys are not compiled again."""
        return cls.model_validate({"data": book}, context=STORED)


class ShownGreeting(BaseModel):
    index: int = Field(
        description="Which greeting: 0 is the card's `first_message`, n its "
        "`alternate_greetings[n-1]` (the same numbers whichever are left out as empty)."
    )
    text: str = Field(description="With `{{char}}`, `{{user}}`, `<BOT>`, `<USER>` expanded.")


class Greetings(BaseModel):
    greetings: list[ShownGreeting] = Field(
        description="The greeting, then the alternates; empty ones left out."
    )


# --- the lorebook test: POST /api/characters/{id}/lorebook/test ------------------------------

MAX_TEST_MESSAGES, MAX_TEST_MESSAGE_CHARS = 200, 8000


class LoreTestMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TEST_MESSAGE_CHARS)


class LorebookTestBody(BaseModel):
    """A conversation to try the character's lorebook on (no LLM is called)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[LoreTestMessage] = Field(
        min_length=1,
        max_length=MAX_TEST_MESSAGES,
        description="The conversation, oldest first; the last is the new message.",
    )
    scan_depth: JsonInt | None = Field(
        None,
        ge=0,
        le=MAX_SCAN_DEPTH,
        description="Recent messages scanned, the last among them (a book's `scan_depth`, "
        "as SillyTavern counts it: 0 scans none). Left out: the book's `scan_depth`, else "
        "the last and LORE_SCAN_DEPTH before it. Sent, it wins over the book's (to try a value).",
    )
    token_budget: JsonInt | None = Field(
        None,
        ge=0,
        le=MAX_TOKEN_BUDGET,
        description="Tokens of lore let in; left out: the book's `token_budget`, else "
        "LORE_TEST_TOKEN_BUDGET. Sent, it wins over the book's.",
    )


# The same fields as chat's receipt (`context.lore`, `context.lore_left_out`).
class LorebookTestResult(BaseModel):
    fired: list[LoreUsed] = Field(description="What would go into the prompt, in its order.")
    left_out: list[LoreLeftOut]
