"""Request and response models of the chat endpoints, as API.md states them.

Field-level limits (message counts and lengths) arrive with the chat issue; the shapes and
defaults here are already the contract's.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class Scenario(BaseModel):
    opponent: str | None = None
    situation: str | None = None
    background: str | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)
    persona: str | None = None
    character_id: str | None = None
    scenario: Scenario | None = None
    session_id: str | None = None
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=4096)
    model: str | None = None
    tts_enabled: bool = True
    tts_mode: Literal["realtime", "delayed", "on_click"] = "realtime"
    tts_delay_ms: int = Field(0, ge=0)
    tts_streaming_mode: int = Field(0, ge=0, le=3)
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ChatReply(BaseModel):
    content: str
    usage: Usage
    session_id: str
    audio_url: str | None
    context_summarized: bool


class ModelInfo(BaseModel):
    id: str
    name: str


class ModelList(BaseModel):
    models: list[ModelInfo]
