"""Request and response models of the TTS endpoints, as API.md states them."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from avatar_shared.json_types import SOME_TEXT, JsonInt
from avatar_shared.speech import MAX_SPEECH_CHARS

# The language codes GPT-SoVITS api_v2 accepts.
Language = Literal[
    "auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"
]


class TtsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS, pattern=SOME_TEXT)
    voice_id: str = Field("default", min_length=1, max_length=64, pattern=SOME_TEXT)
    text_lang: Language = "ko"
    prompt_lang: Language = "ko"
    streaming_mode: JsonInt = Field(0, ge=0, le=3)
    return_binary: StrictBool = False
    media_type: Literal["wav", "ogg", "aac", "raw"] = "wav"
    file_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{16,64}$",
        description="Store the audio under this id (beyond API.md: lets the chat service "
        "hand out an audio_url before the speech exists, for tts_mode=delayed).",
    )


class SpeechFile(BaseModel):
    audio_url: str
    file_id: str
    duration: float
    file_size: int
    format: str
    voice_id: str
    created_at: str
    cached: bool


class Voice(BaseModel):
    id: str
    name: str
    language: str
    description: str


class VoiceList(BaseModel):
    voices: list[Voice]
    default_voice_id: str
