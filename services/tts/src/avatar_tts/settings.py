from pathlib import Path
from typing import Literal

from pydantic import Field

from avatar_shared.settings import SharedSettings

SHIPPED_VOICES = Path(__file__).parent / "data" / "voices.json"


class TtsSettings(SharedSettings):
    tts_engine: Literal["gpt-sovits", "local"] = Field(
        "gpt-sovits", description="Engine for voices that name none: gpt-sovits or local."
    )
    tts_base_url: str = Field("http://localhost:9880", description="GPT-SoVITS api_v2 server.")
    tts_api_path: str = Field("/tts", description="Path of GPT-SoVITS's synthesis endpoint.")
    assets_dir: str = Field("var/user_assets", description="Where per-user audio files are stored.")
    assets_max_bytes: int = Field(
        2 * 1024**3, gt=0, description="Audio kept on disk at most; least recently used goes first."
    )
    assets_max_age_s: float = Field(
        30 * 24 * 3600, gt=0, description="Audio unused this long is deleted."
    )
    voices_file: str = Field(
        "", description="Voices file; empty means the voices.json shipped with the service."
    )

    tts_timeout_s: float = Field(
        60.0, gt=0, description="Longest wait for the speech server's next bytes."
    )

    @property
    def voices_path(self) -> Path:
        return Path(self.voices_file) if self.voices_file else SHIPPED_VOICES
