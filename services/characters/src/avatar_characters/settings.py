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
    default_user_name: str = Field("User", min_length=1, max_length=100)
    """`{{user}}` in greetings when the caller names no persona of their own. Must match
    chat's DEFAULT_USER_NAME (the same variable, read by both), so a greeting shows the name
    the prompt uses."""
    lore_scan_depth: int = Field(4, ge=0, le=100)
    """Recent messages (besides the new one) scanned for lorebook keys, unless the book says:
    the same variable as chat's, so a lorebook test scans what a chat would."""
    lore_test_token_budget: int = Field(2048, ge=0, le=1_000_000)
    """Tokens of lore a lorebook test (POST /api/characters/{id}/lorebook/test) lets in when
    neither the request nor the book sets a budget (chat's is a share of the model's window)."""
    lore_tests_per_min: int = Field(30, gt=0)
    """Lorebook tests one user (or anonymous address) may run a minute, else 429 rate_limited."""
