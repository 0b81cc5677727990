from pathlib import Path

from pydantic import Field

from avatar_shared.settings import PeerUrls, SharedSettings

SHIPPED_PRESETS = Path(__file__).parent / "data" / "characters.json"


class CharactersSettings(SharedSettings, PeerUrls):
    characters_file: str = Field(
        "", description="Presets file; empty means the characters.json shipped with the service."
    )
    images_dir: str = Field(
        "", description="Folder behind /images/ for card export portraits; empty: placeholders."
    )
    voices_cache_s: float = Field(
        60.0, ge=0, description="How long the TTS service's voice list is reused."
    )

    @property
    def presets_path(self) -> Path:
        return Path(self.characters_file) if self.characters_file else SHIPPED_PRESETS
