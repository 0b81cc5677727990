from pydantic import Field

from avatar_shared.settings import ServiceSettings


class CharactersSettings(ServiceSettings):
    characters_file: str = ""
    """Presets file; empty means the characters.json shipped with the service."""
    images_dir: str = ""
    """Folder behind /images/ for card export portraits; empty: placeholders."""
    voices_cache_s: float = Field(60.0, ge=0)
    """How long the TTS service's voice list is reused."""
    max_card_json_bytes: int = Field(1_000_000, gt=0)
    """Largest Character Card an import takes, in bytes of its JSON (in a PNG, the text of
    its card chunk: the picture is not stored and does not count); else 413 card_too_large.
    Every write of a character, the import too, is held to it measured as its export (which
    adds the fields the specs require, to each lorebook entry too), so that any character
    can be imported back."""
    max_characters_per_user: int = Field(100, gt=0)
    """Most characters one signed-in user may keep; past it a create or import is 409
    quota_exceeded."""
    max_character_bytes_per_user: int = Field(50_000_000, gt=0)
    """Most bytes one signed-in user's characters and imported cards may take in Redis."""
    max_characters_per_anonymous_user: int = Field(20, gt=0)
    """Most characters one anonymous user (one anonymous id) may keep."""
    max_character_bytes_per_anonymous_user: int = Field(5_000_000, gt=0)
    """Most bytes one anonymous user's characters and imported cards may take in Redis."""
    max_characters_per_address: int = Field(100, gt=0)
    """Most characters every anonymous user of one client address (IPv4 address, IPv6 /64)
    may keep together (signed-in users are not counted)."""
    max_character_bytes_per_address: int = Field(10_000_000, gt=0)
    """Most bytes the characters of every anonymous user of one client address may take
    together."""
    max_personas_per_user: int = Field(50, gt=0)
    """Most user personas (/api/personas) one signed-in user may keep; past it a create is 409
    quota_exceeded."""
    max_persona_bytes_per_user: int = Field(1_000_000, gt=0)
    """Most bytes one signed-in user's personas may take in Redis (50 personas of the longest
    description take about 650 kB)."""
    max_personas_per_anonymous_user: int = Field(10, gt=0)
    """Most personas one anonymous user may keep."""
    max_persona_bytes_per_anonymous_user: int = Field(200_000, gt=0)
    """Most bytes one anonymous user's personas may take in Redis."""
    max_personas_per_address: int = Field(50, gt=0)
    """Most personas every anonymous user of one client address may keep together."""
    max_persona_bytes_per_address: int = Field(1_000_000, gt=0)
    """Most bytes the personas of every anonymous user of one client address may take
    together."""
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
