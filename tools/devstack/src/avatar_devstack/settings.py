from pydantic import Field

from avatar_shared.settings import PeerUrls, SharedSettings


class StackSettings(SharedSettings, PeerUrls):
    """What the dev runner and the gateway read. Each service's port comes from its URL."""

    edge_url: str = Field("http://127.0.0.1:8010", description="Base URL of the edge app.")
    gateway_port: int = Field(8000, description="Port of the Traefik gateway (the public entry).")
    gateway_healthcheck_interval: str = Field(
        "5s", description="How often Traefik checks each replica's /healthz."
    )
    gateway_response_timeout: str = Field(
        "30s", description="Longest the gateway waits for a service's answer (not chat/tts)."
    )
    gateway_log_level: str = Field("WARN", description="Traefik's own log level.")
    frontend_origins: str = Field(
        "http://localhost:3000",
        description="Comma-separated origins allowed to call with credentials (CORS).",
    )
    data_dir: str = Field("var", description="Where `make run` keeps Redis data and runtime files.")
