"""Where each part of a local stack listens: fixed ports for `make run`, free ones for tests."""

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from avatar_devstack.settings import StackSettings
from avatar_shared.registry import APPS

# The emulators listen where the real upstreams do by default.
EMULATOR_DEFAULT_PORTS = {"ollama": 11434, "openai": 8002, "gpt-sovits": 9880, "hunyuan3d": 8081}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme in ("https", "rediss") else 80)


@dataclass(frozen=True)
class Ports:
    gateway: int
    gateway_metrics: int  # Traefik's own metrics, on loopback only
    redis: int
    apps: dict[str, int]
    emulators: dict[str, int] = field(default_factory=dict)
    # Ports of further replicas of an app, beyond its first one in `apps`.
    replicas: dict[str, list[int]] = field(default_factory=dict)
    oidc_provider: int | None = None  # the demo OpenID provider, with the emulators

    def app_ports(self, name: str) -> list[int]:
        return [self.apps[name], *self.replicas.get(name, [])]

    @classmethod
    def from_settings(cls, settings: StackSettings, emulators: bool) -> "Ports":
        urls = {**settings.service_urls(), "edge": settings.edge_url}
        return cls(
            gateway=settings.gateway_port,
            gateway_metrics=settings.gateway_metrics_port,
            redis=port_of(settings.redis_url),
            apps={spec.name: port_of(urls[spec.name]) for spec in APPS},
            emulators=dict(EMULATOR_DEFAULT_PORTS) if emulators else {},
            oidc_provider=settings.oidc_provider_port if emulators else None,
        )

    @classmethod
    def free(cls, emulators: bool, replicas: dict[str, int] | None = None) -> "Ports":
        """`replicas` says how many processes of an app to run (default one each)."""
        return cls(
            gateway=free_port(),
            gateway_metrics=free_port(),
            redis=free_port(),
            apps={spec.name: free_port() for spec in APPS},
            emulators={name: free_port() for name in EMULATOR_DEFAULT_PORTS} if emulators else {},
            replicas={
                name: [free_port() for _ in range(count - 1)]
                for name, count in (replicas or {}).items()
            },
            oidc_provider=free_port() if emulators else None,
        )


def local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
