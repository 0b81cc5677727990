"""The character object of API.md."""

from pydantic import BaseModel, ConfigDict, Field


class CharacterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    persona: str
    voice_id: str = "default"
    description: str = ""
    category: str = ""
    tags: list[str] = Field(default_factory=list)
    sample_dialogue: str = ""
    image_url: str | None = None


class Character(CharacterIn):
    id: str
    is_preset: bool
    owner: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class CharacterList(BaseModel):
    characters: list[Character]
