"""The whole stack on one machine: Redis, the five services, the edge, Traefik, and (for demos
and tests) the upstream emulators. `make run`, `make demo` and the end-to-end tests all start
it through `Stack`, so they exercise the same wiring.
"""

import os
import re
import shutil
import string
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from avatar_devstack.environment import GATEWAY_CONFIG_DIR, OIDC_PROVIDER_DIR, stack_env
from avatar_devstack.ports import Ports, local_url, port_open
from avatar_devstack.secrets import dev_secrets
from avatar_devstack.settings import StackSettings
from avatar_devstack.supervisor import ChildFailed, Supervisor
from avatar_shared.registry import APPS_BY_NAME, app_spec

TRAEFIK_NO_ROUTE = "404 page not found\n"


def render_static_config(env: dict[str, str], out_dir: Path) -> Path:
    """Traefik's static file cannot read the environment itself: fill its ${NAME}s here (as
    gateway/traefik/render.sh does in the image)."""
    template = string.Template((GATEWAY_CONFIG_DIR / "traefik.yml").read_text())
    proxies = yaml_items(env.get("GATEWAY_TRUSTED_PROXIES", ""))
    out = out_dir / "traefik.yml"
    out.write_text(template.substitute({**env, "GATEWAY_TRUSTED_PROXIES": proxies}))
    return out


def yaml_items(addresses: str) -> str:
    """Addresses or ranges, split on commas or spaces, as items of a YAML list: each quoted
    (one starting with "::" would not parse bare)."""
    if re.search(r"[^0-9A-Fa-f.:/, ]", addresses):
        raise ValueError(f"GATEWAY_TRUSTED_PROXIES: {addresses!r} is not addresses or ranges")
    return ", ".join(f'"{item}"' for item in re.split(r"[,\s]+", addresses) if item)


class MissingBinary(FileNotFoundError):
    """A program the stack runs is not installed."""


def find_binary(name: str) -> str:
    """From PATH, else next to this interpreter (where PyPI packages install their binaries)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise MissingBinary(f"{name} not found: run `make install` first")
    return found


def oidc_provider_unavailable() -> str | None:
    """Why the demo OpenID provider cannot run on this machine (None: it can). It is the only
    part of the stack that needs Node; `make install` installs its package when npm is there."""
    try:
        find_binary("node")
    except MissingBinary:
        return "node not found (Node 20+, then `make install`)"
    if not (OIDC_PROVIDER_DIR / "node_modules").is_dir():
        return "the demo OpenID provider is not installed (`make install` with npm)"
    return None


def routes_loaded(gateway_url: str) -> bool:
    """Traefik answers /ping before its providers have loaded the routers; until then every
    path gets its own plain 404, which no router of ours produces for `/`."""
    try:
        response = httpx.get(f"{gateway_url}/", timeout=1.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.text != TRAEFIK_NO_ROUTE


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    def __init__(
        self,
        ports: Ports,
        settings: StackSettings,
        data_dir: Path,
        log_dir: Path | None = None,
        env_overrides: dict[str, str] | None = None,
        emulator_args: dict[str, list[str]] | None = None,
        app_env: dict[str, dict[str, str]] | None = None,
        oidc_args: list[str] | None = None,
        gen3d_workers: int = 1,
    ) -> None:
        """`env_overrides` win over the wiring (tests point a router elsewhere with them);
        `emulator_args` are extra command-line flags per emulator (latency, token rate);
        `app_env` is extra environment for one app's processes only (benchmarks);
        `oidc_args` are extra flags for the demo OpenID provider (a second client);
        `gen3d_workers` is how many 3D queue workers to run."""
        self.ports = ports
        self.emulator_args = emulator_args or {}
        self.app_env = app_env or {}
        self.oidc_args = oidc_args or []
        self.gen3d_workers = gen3d_workers
        self.data_dir = data_dir
        env = stack_env(ports, settings, dict(os.environ))
        self.env = {**env, **dev_secrets(data_dir / "run"), **(env_overrides or {})}
        self.supervisor = Supervisor(log_dir, settings.dev_log_max_mb * 1024 * 1024)

    @property
    def gateway_url(self) -> str:
        return local_url(self.ports.gateway)

    def app_url(self, name: str) -> str:
        return local_url(self.ports.apps[name])

    def app_urls(self, name: str) -> list[str]:
        """Every replica of the app, the first one (`app_url`) first."""
        return [local_url(port) for port in self.ports.app_ports(name)]

    def emulator_url(self, name: str) -> str:
        return local_url(self.ports.emulators[name])

    def start(self) -> None:
        busy = [str(port) for port in self._all_ports() if port_open(port)]
        if busy:
            # Readiness is judged by answering ports: a leftover process would fool it.
            raise ChildFailed(f"port(s) {', '.join(busy)} already in use (another stack running?)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_redis()
            # Start the independent processes together, then wait for each: a faster start.
            waits = [
                self._start_emulator(name, port) for name, port in self.ports.emulators.items()
            ]
            if self.ports.oidc_provider:
                waits.append(self._start_oidc_provider(self.ports.oidc_provider))
            waits += [
                self._start_app(name, port, replica)
                for name in APPS_BY_NAME
                for replica, port in enumerate(self.ports.app_ports(name), start=1)
            ]
            for wait in waits:
                wait()
            self.start_gen3d_workers(self.gen3d_workers)
            self.start_gateway()
        except BaseException:
            self.supervisor.stop_all()
            raise

    def stop(self) -> None:
        self.supervisor.stop_all()

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _all_ports(self) -> list[int]:
        p = self.ports
        apps = [port for name in p.apps for port in p.app_ports(name)]
        extras = [*p.emulators.values(), *filter(None, [p.oidc_provider])]
        return [p.gateway, p.gateway_metrics, p.redis, *apps, *extras]

    def start_redis(self) -> None:
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_binary("redis-server"),
            "--port", str(self.ports.redis),
            "--bind", "127.0.0.1",
            "--dir", str(redis_dir),
            # Every write is in the append-only file within a second: a crash (kill -9) of
            # Redis loses at most the last second, and user characters live only here.
            "--save", "60 1",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory", self.env["REDIS_MAXMEMORY"],
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        child = self.supervisor.start("redis", argv, self.env)
        self.supervisor.wait_ready(child, lambda: port_open(self.ports.redis))

    def stop_redis(self, crash: bool = False) -> None:
        self.stop_child("redis", crash)

    def stop_child(self, name: str, crash: bool = False) -> None:
        """Stops one child (`chat-2`, `emulator-ollama`): gracefully, or killed at once
        (SIGKILL, as a crash or an OOM kill would) when `crash`."""
        for child in list(self.supervisor.children):
            if child.name == name:
                self.supervisor.stop(child, grace_s=0 if crash else 5)
                self.supervisor.children.remove(child)

    def start_emulator(self, name: str) -> None:
        self._start_emulator(name, self.ports.emulators[name])()

    def _start_app(self, name: str, port: int, replica: int) -> Callable[[], None]:
        """Replica 1 is named after the app (`chat`), later ones `chat-2`, `chat-3`..."""
        argv = [
            sys.executable, "-m", "uvicorn", "--factory", app_spec(name).factory,
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
        child_name = name if replica == 1 else f"{name}-{replica}"
        env = {**self.env, **self.app_env.get(name, {})}
        child = self.supervisor.start(child_name, argv, env)
        return lambda: self.supervisor.wait_ready(
            child, lambda: _http_ok(f"{local_url(port)}/healthz")
        )

    def start_app(self, name: str, replica: int = 1) -> None:
        """Starts a replica of an app again (after `stop_child`), and waits until it is up."""
        self._start_app(name, self.ports.app_ports(name)[replica - 1], replica)()

    def start_gen3d_workers(self, count: int) -> None:
        """Workers of the 3D job queue: not apps (no port), they take jobs from Redis. Started
        together; ready once gen3d counts as many workers as are running (a worker killed
        just before may still be counted for ~11 s: then this may return a little early)."""
        argv = [sys.executable, "-m", "avatar_gen3d.worker"]
        env = {**self.env, **self.app_env.get("gen3d", {})}
        first = len(self._worker_children()) + 1
        children = [
            self.supervisor.start(f"gen3d-worker-{number}", argv, env)
            for number in range(first, first + count)
        ]
        running = len(self._worker_children())
        for child in children:
            self.supervisor.wait_ready(child, lambda: self._gen3d_workers() >= running)

    def _worker_children(self) -> list:
        return [c for c in self.supervisor.children if c.name.startswith("gen3d-worker")]

    def _gen3d_workers(self) -> int:
        try:
            answer = httpx.get(f"{self.app_url('gen3d')}/api/generate/queue", trust_env=False)
            return int(answer.json()["data"]["workers"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return -1

    def _start_emulator(self, name: str, port: int) -> Callable[[], None]:
        argv = [sys.executable, "-m", "avatar_emulators", name, "--port", str(port)]
        argv += self.emulator_args.get(name, [])
        child = self.supervisor.start(f"emulator-{name}", argv, self.env)
        return lambda: self.supervisor.wait_ready(child, lambda: port_open(port))

    def _start_oidc_provider(self, port: int) -> Callable[[], None]:
        """The demo OpenID provider (node); `make install` installs its package."""
        if not (OIDC_PROVIDER_DIR / "node_modules").is_dir():
            raise ChildFailed("the demo OpenID provider is not installed: run `make install`")
        argv = [
            find_binary("node"), str(OIDC_PROVIDER_DIR / "server.mjs"), "--port", str(port),
            # `--name=value`: a generated secret may start with "-", which node's parseArgs
            # would otherwise read as an option of its own.
            f"--client-id={self.env['GOOGLE_CLIENT_ID']}",
            f"--client-secret={self.env['GOOGLE_CLIENT_SECRET']}",
            f"--redirect-uri={self.env['PUBLIC_BASE_URL']}/api/auth/google/callback",
            *self.oidc_args,
        ]  # fmt: skip
        child = self.supervisor.start("oidc-provider", argv, self.env)
        discovery = self.env["OIDC_DISCOVERY_URL"]
        return lambda: self.supervisor.wait_ready(child, lambda: _http_ok(discovery))

    def start_gateway(self) -> None:
        run_dir = self.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = render_static_config(self.env, run_dir)
        argv = [find_binary("traefik"), f"--configFile={config}"]
        # In its configuration's folder: Traefik reads its local plugins from there (traefik.yml).
        child = self.supervisor.start("traefik", argv, self.env, cwd=GATEWAY_CONFIG_DIR)
        self.supervisor.wait_ready(child, self._gateway_routes_loaded)

    def _gateway_routes_loaded(self) -> bool:
        return routes_loaded(self.gateway_url)
