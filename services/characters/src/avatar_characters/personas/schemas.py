"""The user persona object, and the limits every write must respect."""

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from avatar_characters.schemas import OwnedSentBack
from avatar_shared.json_types import SOME_TEXT

ID_PREFIX = "per_"


class PersonaFields(BaseModel):
    """What POST and PUT take."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(
        min_length=1, max_length=100, pattern=SOME_TEXT, description="Who the user is: {{user}}."
    )
    description: str = Field(
        "", max_length=4000, description="What the character should know of the user."
    )
    is_default: StrictBool | None = Field(
        None,
        description="Make it the caller's default persona (clears it on the others), or not. "
        "Left out: not the default on POST, unchanged on PUT.",
    )


class PersonaReplacement(PersonaFields, OwnedSentBack):
    """PUT's body: the fields, and the read-only keys GET answered if sent back (ignored)."""


class Persona(BaseModel):
    id: str
    name: str
    description: str
    is_default: bool = Field(description="The caller's default persona; at most one is.")
    owner: str
    created_at: str
    updated_at: str


class PersonaPage(BaseModel):
    personas: list[Persona]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
