"""Settings base shared by every service.

Every value comes from an environment variable (upper-case field name); an optional `.env`
file in the working directory fills the gaps, and the environment always wins. Each service
subclasses `SharedSettings` with its own variables only; `.env.example` documents them all.
"""

from pydantic import Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from avatar_shared.registry import SERVICES

# Each setting's meaning is the docstring under it (the settings docs are made from them).
SETTINGS_CONFIG = SettingsConfigDict(
    env_file=".env", extra="ignore", frozen=True, use_attribute_docstrings=True
)


class SharedSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    redis_url: str = "redis://localhost:6379/0"
    """Redis server shared by every service."""
    redis_timeout_s: float = Field(1.0, gt=0)
    """Connect and command timeout for Redis calls."""
    log_level: str = "INFO"
    """Log level of the JSON logs."""
    max_request_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    """Larger request bodies are refused with 413."""


class _PeerUrlsBase(BaseSettings):
    model_config = SETTINGS_CONFIG

    def service_urls(self) -> dict[str, str]:
        """Each service's base URL, by name."""
        return {spec.name: getattr(self, f"{spec.name}_url") for spec in SERVICES}


# Where the other services listen, for services that call them over HTTP: one `<name>_url`
# field per service of the registry, defaulting to its port under `make run`.
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
