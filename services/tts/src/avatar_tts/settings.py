from typing import Literal

from pydantic import Field

from avatar_shared.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    tts_engine: Literal["gpt-sovits", "local"] = "gpt-sovits"
    """Engine for voices that name none: gpt-sovits or local."""
    tts_base_url: str = "http://localhost:9880"
    """GPT-SoVITS api_v2 server."""
    tts_api_path: str = "/tts"
    """Path of GPT-SoVITS's synthesis endpoint."""
    assets_dir: str = "var/user_assets"
    """Where per-user files are stored (audio in `<user>/audio/`, 3D jobs in `<user>/3d/`)."""
    assets_max_bytes: int = Field(2 * 1024**3, gt=0)
    """Audio kept on disk at most; least recently used goes first."""
    assets_max_age_s: float = Field(30 * 24 * 3600, gt=0)
    """Audio unused this long is deleted."""
    voices_file: str = ""
    """Voices file; empty means the voices.json shipped with the service."""

    tts_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for the speech server's next bytes."""
