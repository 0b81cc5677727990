"""The character object of API.md, and the limits every write must respect."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_TAGS, MAX_TAG_CHARS = 20, 30
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


def _check_image_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return value
    if value.startswith("/") and not value.startswith("//"):
        return value
    raise ValueError("must be an http(s) URL or a site-relative path starting with /")


class CharacterFields(BaseModel):
    """The editable fields (POST and PUT take them all; PATCH any subset)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    persona: str = Field(min_length=1, max_length=8000)
    voice_id: str = Field("default", pattern=SLUG)
    description: str = Field("", max_length=2000)
    category: str = Field("", max_length=50)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    sample_dialogue: str = Field("", max_length=4000)
    image_url: str | None = Field(None, max_length=2000)
    # Kept from an imported Character Card (its scenario and first message). Not in API.md:
    # a PUT that leaves them out keeps their values (see CharacterService.replace).
    scenario: str = Field("", max_length=4000)
    first_message: str = Field("", max_length=4000)

    _image_url = field_validator("image_url")(_check_image_url)


CARD_ONLY_FIELDS = ("scenario", "first_message")


def max_length(field: str) -> int:
    """A text field's limit, read from CharacterFields: the one place limits are set."""
    return next(
        m.max_length
        for m in CharacterFields.model_fields[field].metadata
        if hasattr(m, "max_length")
    )


class CharacterPatch(BaseModel):
    """Any subset of the editable fields. Only the types are checked here: the character
    that results is validated as a whole by CharacterFields, where the limits live."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    persona: str | None = None
    voice_id: str | None = None
    description: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    sample_dialogue: str | None = None
    image_url: str | None = None
    scenario: str | None = None
    first_message: str | None = None


class Character(CharacterFields):
    model_config = ConfigDict(extra="ignore")  # stored extras (the raw card) stay inside

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
