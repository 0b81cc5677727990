from pydantic import Field

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
    gateway_in_flight_per_address: int = Field(100, gt=0)
    """Requests one client address (an IPv6 client's /64) may have under way at once on each
    of the gateway's routes (Traefik counts per route: chat, tts, characters, gen3d, auth, the
    edge's); past it the gateway answers 429 at once. Room for an office behind one NAT."""
    gateway_trusted_proxies: str = ""
    """Addresses or CIDR ranges (separated by commas or spaces) of proxies in front of the
    gateway (a TLS-terminating one): the gateway believes their X-Forwarded-For, and counts a
    client's requests under way by the address they append there rather than by the proxy's
    own. Every client must then come through them. Add them to FORWARDED_ALLOW_IPS as well."""
    gateway_read_timeout: str = "30s"
    """Longest the gateway waits for a whole request, headers and body: a client that sends
    them slowly (or never) is cut off. Traefik has no timeout for headers alone, so this also
    bounds uploads: a 10 MiB one needs at least 2.8 Mbit/s. Streamed replies are not bounded."""
    dev_log_max_mb: int = Field(20, gt=0)
    """Where the dev runner writes each process's output to a file (tests, benchmarks), that
    file is cut past this size, its earlier part kept as `<name>.log.1`."""
    frontend_origins: str = "http://localhost:3000"
    """Comma-separated origins allowed to call with credentials (CORS); each is read
    as its origin, by the services and the gateway alike (`http://localhost:3000/` is
    `http://localhost:3000`)."""
    public_base_url: str = ""
    """The gateway as browsers see it; empty: http://localhost:<gateway_port>."""
    oidc_provider_port: int = 9000
    """Port of the demo OpenID provider that `make demo` starts."""
    data_dir: str = "var"
    """Where `make run` keeps Redis data and runtime files."""
