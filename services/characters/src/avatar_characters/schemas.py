"""The character object of API.md, and the limits every write must respect."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Tag = Annotated[str, Field(min_length=1, max_length=30)]


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
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    sample_dialogue: str = Field("", max_length=4000)
    image_url: str | None = Field(None, max_length=2000)
    # Kept from an imported Character Card (its scenario and first message).
    scenario: str = Field("", max_length=4000)
    first_message: str = Field("", max_length=4000)

    _image_url = field_validator("image_url")(_check_image_url)


class CharacterPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(None, min_length=1, max_length=100)
    persona: str | None = Field(None, min_length=1, max_length=8000)
    voice_id: str | None = Field(None, pattern=SLUG)
    description: str | None = Field(None, max_length=2000)
    category: str | None = Field(None, max_length=50)
    tags: list[Tag] | None = Field(None, max_length=20)
    sample_dialogue: str | None = Field(None, max_length=4000)
    image_url: str | None = Field(None, max_length=2000)
    scenario: str | None = Field(None, max_length=4000)
    first_message: str | None = Field(None, max_length=4000)

    _image_url = field_validator("image_url")(_check_image_url)


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
