from pydantic import Field

from avatar_shared.settings import ServiceSettings


class CharactersSettings(ServiceSettings):
    characters_file: str = ""
    """Presets file; empty means the characters.json shipped with the service."""
    images_dir: str = ""
    """Folder behind /images/ for card export portraits; empty: placeholders."""
    voices_cache_s: float = Field(60.0, ge=0)
    """How long the TTS service's voice list is reused."""
    max_characters_per_user: int = Field(100, gt=0)
    """Most characters one user may keep; past it a create or import is 409 quota_exceeded."""
    max_character_bytes_per_user: int = Field(50_000_000, gt=0)
    """Most bytes one user's characters and imported cards may take in Redis."""
    max_personas_per_user: int = Field(50, gt=0)
    """Most user personas (/api/personas) one user may keep; past it a create is 409
    quota_exceeded."""
    max_persona_bytes_per_user: int = Field(1_000_000, gt=0)
    """Most bytes one user's personas may take in Redis (50 personas of the longest
    description take about 650 kB)."""
    character_writes_per_min: int = Field(20, gt=0)
    """Character and persona writes (create, import, change, delete) one user (or anonymous
    address) may make a minute, else 429 rate_limited."""
