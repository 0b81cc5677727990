"""The pytest fixtures every test module shares (loaded by the root conftest.py).

- `redis_url`: a real redis-server on a free port with its own data dir, once per session;
  each test gets a flushed database.
- `app_client`: an httpx.AsyncClient speaking to a service app in-process over ASGITransport,
  with the app's lifespan run (ASGITransport alone does not run it).
- `stack`: the real stack (Redis, Traefik, edge, five services, upstream emulators) on free
  ports, once per session, for end-to-end tests through the gateway.
- `browser`: headless Chromium (Debian's, driven by selenium) without internet access.

Fixtures, and what they are made with (`with_lifespan_state`, `OTHER_OIDC_CLIENT`): the
plain helpers tests share (`as_user`, `metric`, `own_stack`...) are in the repository's
tests/helpers.py.
"""

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from starlette.types import ASGIApp, Receive, Scope, Send

from avatar_devstack.environment import ONE_ADDRESS
from avatar_devstack.ports import Ports, free_port, port_open
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack, find_binary
from avatar_devstack.supervisor import Supervisor

# Every service signs anonymous ids with a key that has no default: the suite makes one for
# the settings its tests build (a stack started by a fixture gets its own, see Stack).
os.environ.setdefault("ANON_ID_SECRET", secrets.token_urlsafe(32))

# The second OpenID client the stack's demo provider knows (for cross-client attacks).
OTHER_OIDC_CLIENT = ("another-app", secrets.token_urlsafe(16))

AppClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


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
    """`async with app_client(create_app(settings)) as client:` (settings must carry redis_url);
    `address=` is the client address the app sees (127.0.0.1 by default)."""

    @asynccontextmanager
    async def open_client(
        app: FastAPI, address: str = "127.0.0.1"
    ) -> AsyncIterator[httpx.AsyncClient]:
        async with app.router.lifespan_context(app) as state:
            # raise_app_exceptions=False: clients see the 500 envelope, as over the network.
            transport = httpx.ASGITransport(
                app=with_lifespan_state(app, state or {}),
                raise_app_exceptions=False,
                client=(address, 50000),
            )
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client

    return open_client


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
            **ONE_ADDRESS,  # the whole suite comes from 127.0.0.1
            "GEN3D_RATE_PER_HOUR": "100000",
            "LLM_CALLS_PER_USER": "100000",
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
CSP_WATCH = """
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => {
        const where = `${event.sourceFile}:${event.lineNumber}`;
        window.cspViolations.push(`${event.effectiveDirective} ${event.blockedURI} at ${where}`);
    });
"""


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
    # What each page's Content-Security-Policy refused, from its first script on (read with
    # tests/helpers.csp_violations): a page that needs more than its policy allows shows it.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_WATCH})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        yield client


def with_lifespan_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """What an ASGI server does with the state a lifespan yields: a shallow copy of it in
    every request's scope (ASGITransport runs no lifespan, so it does not)."""

    async def app_with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return app_with_state
