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
    prompt_lang: Language = Field(
        "ko",
        description="The language of the voice's reference clip; when not sent, the voice's "
        'own setting ("ko" for every shipped voice).',
    )
    streaming_mode: JsonInt = Field(0, ge=0, le=3)
    return_binary: StrictBool = False
    media_type: Literal["wav", "ogg", "aac", "raw"] = "wav"
    file_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{16,64}$",
        description="Store the audio under this id (beyond API.md: lets the chat service "
        "hand out an audio_url before the speech exists, for tts_mode=delayed).",
    )
    progressive: StrictBool = Field(
        False,
        description="With streaming_mode > 0, and neither return_binary nor file_id: answer "
        "as soon as the speech server's stream has begun, with complete=false; the audio_url "
        "then serves the audio as it is made (beyond API.md: lets the chat service's first "
        "spoken sentence play sooner).",
    )

    @property
    def early(self) -> bool:
        """Whether the answer may come before the audio is whole (see `progressive`)."""
        progressive = self.progressive and self.streaming_mode > 0
        return progressive and not self.return_binary and self.file_id is None


class SpeechFile(BaseModel):
    audio_url: str
    file_id: str
    duration: float
    file_size: int
    format: str
    voice_id: str
    created_at: str
    cached: bool
    complete: bool = Field(
        True,
        description="False in a progressive answer: the file is still being made, its "
        "audio_url serves it as it grows (a WAV's header then claims an open-ended length), "
        "and duration and file_size are 0 (beyond API.md).",
    )


class Voice(BaseModel):
    id: str
    name: str
    language: str
    description: str


class VoiceList(BaseModel):
    voices: list[Voice]
    default_voice_id: str
