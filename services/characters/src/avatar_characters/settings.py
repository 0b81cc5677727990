from pydantic import Field

from avatar_shared.settings import ServiceSettings


class CharactersSettings(ServiceSettings):
    characters_file: str = ""
    """Presets file; empty means the characters.json shipped with the service."""
    images_dir: str = ""
    """Folder behind /images/ for card export portraits; empty: placeholders."""
    voices_cache_s: float = Field(60.0, ge=0)
    """How long the TTS service's voice list is reused."""
