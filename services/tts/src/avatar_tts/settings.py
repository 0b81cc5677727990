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
    tts_sample_rate: int = Field(32000, gt=0)
    """Sample rate of the GPT-SoVITS server's model: 32000 for v1, v2 and v2Pro, 24000 for v3
    (48000 only with its super_sampling, which this service never asks for), 48000 for v4.
    api_v2 says it nowhere for `raw` audio (bare PCM; wav, ogg and aac carry their own), so
    raw audio's duration and content type (`rate=`) take it from here."""
    assets_dir: str = "var/user_assets"
    """Where per-user files are stored (audio in `<user>/audio/`, 3D jobs in `<user>/3d/`)."""
    assets_max_bytes: int = Field(2 * 1024**3, gt=0)
    """Audio kept on disk at most; past it the largest holder's least recently used goes."""
    assets_max_bytes_per_user: int = Field(100 * 1024**2, gt=0)
    """Audio one user (anonymous callers: all of one client address together) holds at most,
    each audio counted once (a cache hit's name of someone else's audio costs nothing); past
    it their own least recently used goes."""
    assets_max_files_per_user: int = Field(2000, gt=0)
    """Audio files one user (anonymous callers: one client address) holds at most, cache
    hits' names included (each is a file and an index entry in Redis); past it their own
    least recently used goes."""
    assets_max_age_s: float = Field(30 * 24 * 3600, gt=0)
    """Audio unused this long is deleted (checked after each new file and by each replica's
    sweep, every TTS_TIMEOUT_S + 5 s, or this age if shorter)."""
    voices_file: str = ""
    """Voices file; empty means the voices.json shipped with the service."""

    tts_timeout_s: float = Field(60.0, gt=0)
    """Longest wait for the speech server's next bytes."""
    tts_shutdown_wait_s: float = Field(20.0, ge=0)
    """At shutdown, longest wait for speech answered early (its URL handed out) to be
    finished before it is given up; keep it well inside the termination grace period
    (Kubernetes: 30 s by default)."""
    tts_rate_per_min: int = Field(120, gt=0)
    """Speech requests one user (or anonymous id) may make a minute (chat's spoken
    sentences included), else 429 rate_limited."""
    tts_rate_per_min_per_address: int = Field(240, gt=0)
    """Speech requests anonymous callers of one client address may make a minute, all their
    ids together, else 429 rate_limited."""
    tts_max_in_flight: int = Field(4, gt=0)
    """Syntheses one tts replica runs at once; more wait in line. GPT-SoVITS api_v2 keeps one
    prompt cache (the reference voice) per server, so syntheses in different voices that run
    at once on one server may come out in each other's voice (upstream issue
    RVC-Boss/GPT-SoVITS#740): with one GPT-SoVITS server, set 1 and run one tts replica."""
    tts_queue_wait_s: float = Field(10.0, gt=0)
    """Longest a synthesis waits in line before 503 tts_busy."""
