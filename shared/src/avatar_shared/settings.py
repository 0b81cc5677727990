"""Settings base shared by every service.

Every value comes from an environment variable (upper-case field name); an optional `.env`
file in the working directory fills the gaps, and the environment always wins. Each service
subclasses `SharedSettings` with its own variables only; `.env.example` documents them all.
"""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = Field(
        "redis://localhost:6379/0", description="Redis server shared by every service."
    )
    redis_timeout_s: float = Field(
        1.0, gt=0, description="Connect and command timeout for Redis calls."
    )
    log_level: str = Field("INFO", description="Log level of the JSON logs.")
    max_request_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Larger request bodies are refused with 413."
    )


class PeerUrls(BaseSettings):
    """Where the other services listen, for services that call them over HTTP."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    chat_url: str = Field("http://127.0.0.1:8011", description="Base URL of the chat service.")
    tts_url: str = Field("http://127.0.0.1:8012", description="Base URL of the tts service.")
    characters_url: str = Field(
        "http://127.0.0.1:8013", description="Base URL of the characters service."
    )
    gen3d_url: str = Field("http://127.0.0.1:8014", description="Base URL of the gen3d service.")
    auth_url: str = Field("http://127.0.0.1:8015", description="Base URL of the auth service.")

    def service_urls(self) -> dict[str, str]:
        return {
            "chat": self.chat_url,
            "tts": self.tts_url,
            "characters": self.characters_url,
            "gen3d": self.gen3d_url,
            "auth": self.auth_url,
        }
