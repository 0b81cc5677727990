"""The voices file: public fields for `GET /api/tts/voices`, engine settings kept private.

Reloaded when its mtime changes, like the character presets (avatar_shared.reloading_file).
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar_shared.reloading_file import ReloadingFile
from avatar_tts.schemas import Voice, VoiceList

SHIPPED_VOICES = Path(__file__).parent / "data" / "voices.json"


class GptSovitsVoice(BaseModel):
    """What GPT-SoVITS api_v2 needs to speak in this voice (never returned by the API)."""

    model_config = ConfigDict(extra="forbid")

    ref_audio_path: str = Field(min_length=1)
    prompt_text: str = ""
    prompt_lang: str = "ko"
    aux_ref_audio_paths: list[str] = Field(default_factory=list)
    speed_factor: float = Field(1.0, gt=0)
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    text_split_method: str | None = None


class LocalVoice(BaseModel):
    """espeak-ng settings: its voice name (a language code such as "ko"), speed, pitch."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = None
    rate: int = Field(175, ge=80, le=450)
    pitch: int = Field(50, ge=0, le=99)


class VoiceEntry(Voice):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["gpt-sovits", "local"] | None = None  # None: TTS_ENGINE decides
    gpt_sovits: GptSovitsVoice | None = None
    local: LocalVoice | None = None


class VoicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_voice_id: str
    voices: list[VoiceEntry] = Field(min_length=1)

    def find(self, voice_id: str) -> VoiceEntry | None:
        return next((v for v in self.voices if v.id == voice_id), None)

    def public(self) -> VoiceList:
        return VoiceList(
            voices=[Voice(**v.model_dump(include=set(Voice.model_fields))) for v in self.voices],
            default_voice_id=self.default_voice_id,
        )


class VoicesFileError(RuntimeError):
    pass


def load_voices(path: Path) -> VoicesFile:
    try:
        voices = VoicesFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise VoicesFileError(f"cannot load voices from {path}: {exc}") from exc
    ids = [v.id for v in voices.voices]
    if len(set(ids)) != len(ids) or voices.default_voice_id not in ids:
        raise VoicesFileError(f"{path}: voice ids repeat, or the default voice is missing")
    return voices


def voices_file(configured: str) -> ReloadingFile[VoicesFile]:
    """The voices file VOICES_FILE names, else the one shipped with the service."""
    return ReloadingFile(Path(configured) if configured else SHIPPED_VOICES, load_voices)
