from avatar_shared.registry import EDGE
from avatar_shared.settings import PeerUrls, SharedSettings


class StackSettings(SharedSettings, PeerUrls):
    """What the dev runner and the gateway read. Each service's port comes from its URL."""

    edge_url: str = f"http://127.0.0.1:{EDGE.port}"
    """Base URL of the edge app."""
    gateway_port: int = 8000
    """Port of the Traefik gateway (the public entry)."""
    gateway_metrics_port: int = 8090
    """Port of Traefik's Prometheus metrics (loopback only; not the public entry)."""
    gateway_healthcheck_interval: str = "1s"
    """How often Traefik checks each replica's /healthz."""
    gateway_response_timeout: str = "30s"
    """Longest the gateway waits for a service's answer (not chat/tts)."""
    gateway_log_level: str = "WARN"
    """Traefik's own log level."""
    frontend_origins: str = "http://localhost:3000"
    """Comma-separated origins allowed to call with credentials (CORS)."""
    public_base_url: str = ""
    """The gateway as browsers see it; empty: http://localhost:<gateway_port>."""
    oidc_provider_port: int = 9000
    """Port of the demo OpenID provider that `make demo` starts."""
    data_dir: str = "var"
    """Where `make run` keeps Redis data and runtime files."""
