"""Settings base shared by every service.

Every value comes from an environment variable (upper-case field name); an optional `.env`
file in the working directory fills the gaps, then a file named after the variable in
/run/secrets (where Docker secrets and a mounted Kubernetes Secret appear, so keys need not
sit in the environment); the environment always wins, but an empty variable counts as unset.
Each service subclasses `SharedSettings` with its own variables only; `.env.example`
documents them all.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from avatar_shared.registry import SERVICES

# Each setting's meaning is the docstring under it (the settings docs are made from them).
SECRETS_DIR = Path("/run/secrets")
SETTINGS_CONFIG = SettingsConfigDict(
    env_file=".env",
    # An empty variable is an unset one: a line copied from .env.example (`ANON_ID_SECRET=`)
    # neither hides a key file nor replaces a default.
    env_ignore_empty=True,
    # Only where it exists: pydantic-settings warns about a missing folder (`make run`).
    secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
    extra="ignore",
    frozen=True,
    use_attribute_docstrings=True,
)


class SharedSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    redis_url: str = "redis://localhost:6379/0"
    """Redis server shared by every service."""
    redis_timeout_s: float = Field(1.0, gt=0)
    """Connect and command timeout for Redis calls."""
    log_level: str = "INFO"
    """Log level of the JSON logs. Each request writes an access line at INFO, but the health
    probes (`/healthz`, `/readyz`, asked every second or so), whose lines are DEBUG."""
    max_request_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    """Larger request bodies are refused with 413."""
    redis_maxmemory: str = Field("1gb", pattern=r"(?i)^\d+(b|k|kb|m|mb|g|gb)?$")
    """Memory Redis may use (Redis's units: 1gb = 1024^3 bytes; `make run` starts its Redis
    with it). Past it writes fail (503) and nothing is evicted (`noeviction`). Each kind of
    user data may fill its share of it (avatar_shared.budget), leaving room for sessions and
    limits."""

    @property
    def redis_maxmemory_bytes(self) -> int:
        return redis_bytes(self.redis_maxmemory)


class _PeerUrlsBase(BaseSettings):
    model_config = SETTINGS_CONFIG

    def service_urls(self) -> dict[str, str]:
        """Each service's base URL, by name."""
        return {spec.name: getattr(self, f"{spec.name}_url") for spec in SERVICES}


# Where the other services listen, for services that call them over HTTP: one `<name>_url`
# field per service of the registry, defaulting to its port under `make run`.
if TYPE_CHECKING:  # the fields create_model makes, as the type checker cannot see them

    class PeerUrls(_PeerUrlsBase):
        chat_url: str
        tts_url: str
        characters_url: str
        gen3d_url: str
        auth_url: str

else:
    PeerUrls = create_model(
        "PeerUrls",
        __base__=_PeerUrlsBase,
        **{
            f"{spec.name}_url": (
                str,
                Field(
                    f"http://127.0.0.1:{spec.port}",
                    description=f"Base URL of the {spec.name} service.",
                ),
            )
            for spec in SERVICES
        },
    )


REDIS_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 10**6,
    "mb": 1024**2,
    "g": 10**9,
    "gb": 1024**3,
}


def redis_bytes(size: str) -> int:
    """A size as redis.conf writes it ("1gb", "200mb", "512") in bytes."""
    text = size.strip().lower()
    digits = text.rstrip("bkmg")
    return int(digits) * REDIS_UNITS[text[len(digits) :]]


def origin_of(url: str) -> str:
    """An origin as browsers send it: scheme://host[:port], the default port left out."""
    parts = urlsplit(url.strip())
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    # An IPv6 address keeps its brackets, as a browser's Origin (and the gateway's CORS) has them.
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}{port}"


class ServiceSettings(SharedSettings, PeerUrls):
    """What the five services (not the edge) share: where the others listen and who calls."""

    env: Literal["development", "production"] = "development"
    """production: auth refuses to start without configured signing keys."""
    public_base_url: str = "http://localhost:8000"
    """The gateway as browsers see it: https makes cookies Secure; its origin may write."""
    frontend_origins: str = "http://localhost:3000"
    """Comma-separated origins allowed to call with credentials (CORS) and to write; each is read
    as its origin, by the services and the gateway alike (`http://localhost:3000/` is
    `http://localhost:3000`)."""
    anon_id_secret: SecretStr = Field(min_length=32)
    """Key that signs anonymous ids (shared by every service; no default: `make run` makes one)."""
    auth_required: bool = False
    """true: anonymous callers get 401 on every write."""
    token_issuer: str = "avatar-forge-auth"
    """`iss` of the access tokens auth signs."""
    token_audience: str = "avatar-forge"
    """`aud` of the access tokens auth signs."""
    jwks_refresh_floor_s: float = Field(10.0, ge=0)
    """Shortest gap between two fetches of auth's public keys for an unknown key id."""
    jwks_max_age_s: float = Field(300.0, ge=0)
    """Auth's public keys are fetched again after this, so a newly published key is seen (auth
    unreachable then: the cached keys go on verifying the tokens they know)."""
    anon_ids_per_address: int = Field(60, ge=1)
    """Anonymous ids one client address may be given an hour; past it, a caller without a
    cookie is the address's shared anonymous id."""
    anon_data_ttl_s: int = Field(14 * 24 * 3600, ge=60)
    """What an anonymous user stores (characters, personas) expires this long after its last use."""

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Origins whose pages may send writes with our cookies (the gateway's own included)."""
        urls = [*self.frontend_origins.split(","), self.public_base_url]
        return frozenset(origin_of(url) for url in urls if url.strip())

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")
