"""The compose gateway for real: the gateway image's entry point runs the real Traefik with
compose's provider settings, and its docker provider reads containers from an emulated Docker
Engine API; the containers carry deploy/compose.yml's own labels, and behind them run the
real apps, each "container" a process on an address of its own (127.0.0.x, one port for
all, as containers on a network). So `docker compose up --scale chat=3`, a replica that
stops, a new one that starts and becomes healthy, and the shared rules are tested end to
end, with no Docker engine on this machine.
"""

import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from avatar_devstack.ports import free_port
from avatar_devstack.stack import find_binary, routes_loaded
from avatar_devstack.supervisor import Child, Supervisor
from avatar_emulators.docker_engine import create_app as docker_engine
from avatar_emulators.server import serve_in_thread
from avatar_shared.registry import app_spec
from tests.deploy.expected import DEPLOY_DIR, compose_default
from tests.deploy.gateway import (
    compose_gateway_environment,
    entry_point_env,
    providers_of,
    start_entry_point,
)
from tests.helpers import metric

COMPOSE = yaml.safe_load((DEPLOY_DIR / "compose.yml").read_text())
PROJECT = COMPOSE["name"]
NETWORK = COMPOSE["networks"]["backend"]["name"]
SESSION_ROUTE = "/api/chat/sessions/{session_id}"


def free_on_every_address(count: int) -> int:
    """A port free on 127.0.0.2 .. 127.0.0.<count+1>: every container listens on it."""
    while True:
        port = free_port()
        try:
            for host in range(2, count + 2):
                with socket.create_server((f"127.0.0.{host}", port)):
                    pass
        except OSError:
            continue
        return port


@dataclass
class ComposeProject:
    """Containers of the project, as the Docker engine would run and report them."""

    supervisor: Supervisor
    docker_url: str
    port: int
    env: dict[str, str]
    addresses: Iterator[int] = field(default_factory=lambda: iter(range(2, 250)))
    running: dict[str, tuple[str, Child]] = field(default_factory=dict)

    def up(self, service: str, number: int, health: str = "healthy") -> str:
        """Starts replica `number` of `service` (an app of the registry); its address."""
        address = f"127.0.0.{next(self.addresses)}"
        name = f"{PROJECT}-{service}-{number}"
        argv = [
            find_binary("uvicorn"), "--factory", app_spec(service).factory,
            "--host", address, "--port", str(self.port), "--no-access-log",
        ]  # fmt: skip
        child = self.supervisor.start(name, argv, self.env)
        self.supervisor.wait_ready(child, lambda: _answers(f"http://{address}:{self.port}"))
        labels = {
            compose_default(key): compose_default(value)
            for key, value in COMPOSE["services"][service]["labels"].items()
        }
        # The one change: compose's containers all listen on 8000, these on `port`.
        port_label = f"traefik.http.services.{service}.loadbalancer.server.port"
        assert labels[port_label] == "8000"
        labels[port_label] = str(self.port)
        labels |= {
            "com.docker.compose.project": PROJECT,
            "com.docker.compose.service": service,
            "com.docker.compose.container-number": str(number),
        }
        spec = {"name": name, "labels": labels, "networks": {NETWORK: address}, "health": health}
        httpx.put(f"{self.docker_url}/_emulator/containers/{name}", json=spec).raise_for_status()
        self.running[name] = (address, child)
        return address

    def healthy(self, service: str, number: int) -> None:
        name = f"{PROJECT}-{service}-{number}"
        health = {"status": "healthy"}
        httpx.post(f"{self.docker_url}/_emulator/containers/{name}/health", json=health)

    def stop(self, service: str, number: int) -> None:
        """As `docker compose stop`: SIGTERM, then the engine reports the container died."""
        name = f"{PROJECT}-{service}-{number}"
        _, child = self.running.pop(name)
        self.supervisor.stop(child)
        httpx.delete(f"{self.docker_url}/_emulator/containers/{name}").raise_for_status()

    def served(self, service: str, number: int, route: str) -> float:
        """Requests replica `number` answered on `route`, from its own /metrics."""
        address, _ = self.running[f"{PROJECT}-{service}-{number}"]
        exposition = httpx.get(f"http://{address}:{self.port}/metrics").text
        return sum(
            metric(exposition, "avatar_http_requests_total", route=route, status=status)
            for status in ("200", "404")
        )


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_gateway(supervisor: Supervisor, docker_url: str, edge: str, run_dir: Path) -> str:
    """The gateway image's entry point with compose's environment for it."""
    environment = compose_gateway_environment()
    providers = providers_of(environment)
    providers["docker"]["endpoint"] = docker_url.replace("http://", "tcp://")
    settings = {name: compose_default(str(value)) for name, value in environment.items()}
    gateway = entry_point_env(providers, run_dir, {**settings, "EDGE_URL": edge})
    child = start_entry_point(supervisor, gateway)
    supervisor.wait_ready(child, lambda: routes_loaded(gateway.url))
    return gateway.url


@pytest.fixture(scope="module")
def compose(redis_url) -> Iterator[tuple[ComposeProject, httpx.Client]]:
    with (
        tempfile.TemporaryDirectory(prefix="avatar-compose-") as tmp,
        serve_in_thread(docker_engine()) as docker_url,
    ):
        supervisor = Supervisor(Path(tmp))
        env = {
            "REDIS_URL": redis_url,
            "ANON_ID_SECRET": secrets.token_urlsafe(32),
            "ASSETS_DIR": str(Path(tmp) / "assets"),
            "LOG_LEVEL": "WARNING",
        }
        project = ComposeProject(supervisor, docker_url, free_on_every_address(8), env)
        try:
            for number in (1, 2, 3):  # docker compose up --scale chat=3
                project.up("chat", number)
            edge = project.up("edge", 1)
            project.up("characters", 1)
            gateway = start_gateway(
                supervisor, docker_url, f"http://{edge}:{project.port}", Path(tmp)
            )
            with httpx.Client(base_url=gateway, timeout=10) as client:
                yield project, client
        finally:
            supervisor.stop_all()


def ask_sessions(client: httpx.Client, times: int) -> list[int]:
    """A session nobody has: each answer (404 session_not_found) is a chat replica's own."""
    return [client.get(f"/api/chat/sessions/{uuid.uuid4()}").status_code for _ in range(times)]


def test_scaled_replicas_share_the_load(compose):
    project, client = compose
    before = [project.served("chat", n, SESSION_ROUTE) for n in (1, 2, 3)]
    assert ask_sessions(client, 30) == [404] * 30
    after = [project.served("chat", n, SESSION_ROUTE) for n in (1, 2, 3)]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 30
    assert min(served) >= 5, served  # round robin over all three


def test_a_stopped_replica_leaves_and_a_new_one_joins_once_healthy(compose):
    project, client = compose
    project.stop("chat", 3)
    assert ask_sessions(client, 20) == [404] * 20  # none lost on the stopped one

    project.up("chat", 4, health="starting")  # its HEALTHCHECK has not passed yet
    assert ask_sessions(client, 20) == [404] * 20
    assert project.served("chat", 4, SESSION_ROUTE) == 0

    project.healthy("chat", 4)
    for _ in range(100):  # Traefik rebuilds its configuration on the health event
        ask_sessions(client, 4)
        if project.served("chat", 4, SESSION_ROUTE) > 0:
            break
        time.sleep(0.1)  # a busy machine takes a moment longer to reload it
    assert project.served("chat", 4, SESSION_ROUTE) > 0


def test_the_shared_rules_apply_as_under_make_run(compose):
    _, client = compose
    probe = client.get("/healthz")  # the apps' probes are not public
    assert probe.status_code == 404 and probe.json()["error"]["code"] == "not_found"
    too_large = client.post(
        "/api/characters", content=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
    origin = "http://localhost:3000"  # compose's default FRONTEND_ORIGINS
    preflight = client.options(
        "/api/characters",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert client.get("/").headers["X-Content-Type-Options"] == "nosniff"


def until(condition, attempts: int = 100) -> None:
    for _ in range(attempts):  # Traefik rebuilds its configuration on the Docker event
        if condition():
            return
        time.sleep(0.1)


def no_replica(client: httpx.Client) -> None:
    until(lambda: client.get("/api/characters").status_code == 503)
    gone = client.get("/api/characters")
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"]["code"] == "service_unavailable"
    assert "retry-after" in gone.headers


def test_a_service_with_no_replica_up_answers_in_the_envelope(compose):
    """Not Traefik's plain "no available server", nor the catch-all's 404: the edge's 503,
    whether Traefik's own health check finds the one replica dead while Docker still counts
    it (the failover of rules.yml), or Docker reports it gone (its route goes, and its paths
    reach the edge). A new replica takes them again."""
    project, client = compose
    _, child = project.running[f"{PROJECT}-characters-1"]
    project.supervisor.stop(child)  # dead, but the engine has not noticed yet
    no_replica(client)
    project.stop("characters", 1)
    no_replica(client)
    project.up("characters", 2)
    until(lambda: client.get("/api/characters").status_code == 200)
    assert client.get("/api/characters").status_code == 200
