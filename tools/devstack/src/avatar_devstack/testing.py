"""The pytest fixtures every test module shares (loaded by the root conftest.py).

- `redis_url`: a real redis-server on a free port with its own data dir, once per session;
  each test gets a flushed database.
- `app_client`: an httpx.AsyncClient speaking to a service app in-process over ASGITransport,
  with the app's lifespan run (ASGITransport alone does not run it).
- `stack`: the real stack (Redis, Traefik, edge, five services, upstream emulators) on free
  ports, once per session, for end-to-end tests through the gateway.
- `browser`: headless Chromium (Debian's, driven by selenium) without internet access.
"""

import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from starlette.types import ASGIApp, Receive, Scope, Send

from avatar_devstack.ports import Ports, free_port, port_open
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack, find_binary
from avatar_devstack.supervisor import Supervisor
from avatar_shared.identity import ANON_COOKIE, AnonymousIds, Identity

# Every service signs anonymous ids with a key that has no default: the suite makes one for
# the settings its tests build (a stack started by a fixture gets its own, see Stack).
os.environ.setdefault("ANON_ID_SECRET", secrets.token_urlsafe(32))

OTHER_OIDC_CLIENT = ("another-app", secrets.token_urlsafe(16))

TEST_USER_HEADER = "X-Test-User"


async def identity_from_test_header(request: Request) -> Identity:
    """For in-process tests of one service's own rules: stands in for `current_identity`
    (`app.dependency_overrides[current_identity] = identity_from_test_header`) so a test can
    speak as several users at once. Real identities (tokens, anonymous cookies) are tested
    end to end through the stack, where auth runs."""
    return Identity(request.headers.get(TEST_USER_HEADER, "anonymous"), signed_in=True)


def as_user(name: str) -> dict[str, str]:
    return {TEST_USER_HEADER: name}


def returning_visitor(client: httpx.AsyncClient) -> str:
    """Gives `client` the anonymous cookie of an earlier visit (signed with the suite's
    ANON_ID_SECRET), as a browser has before it sends requests in parallel; its id."""
    anon_id, cookie = AnonymousIds(os.environ["ANON_ID_SECRET"].encode()).mint()
    client.cookies.set(ANON_COOKIE, cookie)
    return anon_id


@contextmanager
def logged(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logged to `logger_name` (or below it) in the block. Each service's app
    replaces the root logger's handlers with its own, so pytest's caplog cannot see them."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]  # keeps, not emits
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def metric(exposition: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus text exposition (0 when the series is absent)."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@contextmanager
def silent_server() -> Iterator[str]:
    """A hung upstream: it accepts connections and never answers a byte. Its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            with suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join()
        for connection in [*held, listener]:
            connection.close()


AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="avatar-redis-") as data_dir:
        supervisor = Supervisor(Path(data_dir))
        argv = [
            find_binary("redis-server"),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        child = supervisor.start("redis", argv, {})
        try:
            supervisor.wait_ready(child, lambda: port_open(port))
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            supervisor.stop_all()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def app_client(redis: Redis) -> AppClient:
    """`async with app_client(create_app(settings)) as client:` (settings must carry redis_url)."""

    @asynccontextmanager
    async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with app.router.lifespan_context(app) as state:
            # raise_app_exceptions=False: clients see the 500 envelope, as over the network.
            transport = httpx.ASGITransport(
                app=with_lifespan_state(app, state or {}), raise_app_exceptions=False
            )
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client

    return open_client


def with_lifespan_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """What an ASGI server does with the state a lifespan yields: a shallow copy of it in
    every request's scope (ASGITransport runs no lifespan, so it does not)."""

    async def app_with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return app_with_state


@contextmanager
def own_stack(name: str, env: dict[str, str], replicas: dict[str, int] | None = None):
    """A whole stack with the emulators for one test module, when the shared `stack` will
    not do (other limits, several replicas, or faults that must not reach other tests).
    Its data, logs and assets live in a folder of its own, gone afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"avatar-{name}-") as tmp:
        stack = Stack(
            Ports.free(emulators=True, replicas=replicas),
            StackSettings(),
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp),
            env_overrides={
                "ASSETS_DIR": str(Path(tmp) / "assets"),
                "GATEWAY_LOG_LEVEL": "WARN",
                **env,
            },
        )
        with stack:
            yield stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="avatar-stack-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "logs").mkdir()
        overrides = {
            "HEALTH_CACHE_S": "0.5",
            "ASSETS_DIR": str(tmp_path / "assets"),
            "GATEWAY_LOG_LEVEL": "WARN",
            "MAX_REQUEST_BODY_BYTES": "65536",
            # The suite is one client making many sessions: the limits have their own tests.
            "CHAT_RATE_PER_MIN": "100000",
            "MAX_CONCURRENT_USERS": "100000",
            # A dead gen3d worker is noticed within seconds, not the default 20.
            "JOB_HEARTBEAT_S": "2",
            # The sign-in tests' frontend (tests/e2e/oidc_browser.FRONTEND), not the gateway.
            "FRONTEND_URL": "http://localhost:3000",
        }
        stack = Stack(
            Ports.free(emulators=True),
            StackSettings(),
            data_dir=tmp_path / "data",
            log_dir=tmp_path / "logs",
            env_overrides=overrides,
            # A visible token rate, so tests can tell streamed from buffered replies.
            emulator_args={
                **{name: ["--tokens-per-second", "100"] for name in ("ollama", "openai")},
                "hunyuan3d": ["--first-token-latency", "3"],  # time to kill a worker mid-job
            },
            # A second client at the provider, for ID tokens meant for another app.
            oidc_args=["--client", f"{OTHER_OIDC_CLIENT[0]}:{OTHER_OIDC_CLIENT[1]}"],
        )
        with stack:
            yield stack


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium, driven by selenium, with no internet: every host name but
    loopback fails to resolve, as on the GPU LAN, so a page that needs a CDN shows it."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError(
            "the browser tests need Debian's chromium and chromium-driver: "
            "apt-get install chromium chromium-driver (.ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
        # The playground plays speech as it arrives, without a click first.
        "--autoplay-policy=no-user-gesture-required",
        # WebGL on the CPU (model-viewer in the playground): there is no GPU here.
        "--enable-unsafe-swiftshader",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        yield client
