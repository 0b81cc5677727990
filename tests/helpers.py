"""Plain helpers shared by tests in more than one directory: functions, context managers and
constants, never fixtures (the fixtures are in avatar_devstack.testing, loaded by the root
conftest.py, and in each directory's conftest.py).

Where a helper lives: one used by a single service's tests goes in that service's
`tests/helpers.py` (`from .helpers import ...`); one used across directories goes here
(`from tests.helpers import ...`). Conftest modules hold fixtures and hooks only, and import
the helpers they need from these modules; no test imports from a conftest.
"""

import base64
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from prometheus_client.parser import text_string_to_metric_families

from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.ports import Ports
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack
from avatar_shared.adoption import SIGNATURE_HEADER, Adoption, signature_headers
from avatar_shared.identity import ANON_COOKIE, AnonymousIds, Identity

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
    handler.emit = records.append  # type: ignore[method-assign]
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


@contextmanager
def own_stack(
    name: str,
    env: dict[str, str],
    replicas: dict[str, int] | None = None,
    emulator_args: dict[str, list[str]] | None = None,
):
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
            emulator_args=emulator_args,
        )
        with stack:
            yield stack


def client_from(base_url: str, address: str, **kwargs: Any) -> httpx.AsyncClient:
    """A client whose requests come from `address` (any 127.x.y.z works on Linux loopback):
    the gateway and the services see that client address, as they would see another host."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base_url, transport=transport, trust_env=False, **kwargs)


SERAPHINA_PNG = REPO_ROOT.parent / "shared" / "testdata" / "cards" / "default_Seraphina.png"


def seraphina_card() -> dict[str, Any]:
    """SillyTavern's default card as JSON: the base64 text of its PNG's `chara` chunk."""
    png = SERAPHINA_PNG.read_bytes()
    start = png.index(b"chara\x00") + len(b"chara\x00")
    length = int.from_bytes(png[start - 14 : start - 10], "big")  # the chunk's length field
    return json.loads(base64.b64decode(png[start : start - 6 + length]))


def csp_violations(browser: Any) -> list[str]:
    """What the open page's Content-Security-Policy refused so far: "<directive> <what>" each
    (the `browser` fixture records them from the page's first script on)."""
    found: list[str] = browser.execute_script("return window.cspViolations ?? null")
    assert found is not None, "the page was not opened in the browser fixture's browser"
    return found


def peer_signer() -> AnonymousIds:
    """What signs the services' peer calls in tests (the suite's ANON_ID_SECRET)."""
    return AnonymousIds(os.environ["ANON_ID_SECRET"].encode())


def signed_adoption(signer: AnonymousIds, from_id: str, to: str, **kwargs: Any) -> dict[str, str]:
    return signature_headers(signer, Adoption(from_id=from_id, to=to), **kwargs)


# What a caller that is not a peer may send to a service's adoption call, made for the
# browser's anonymous id and cookie; each is sent as a call moving that id's data to
# mallory's account.
NOT_A_PEER: dict[str, Callable[[str, str], dict[str, str]]] = {
    "none": lambda anon_id, cookie: {},
    "garbage": lambda anon_id, cookie: {SIGNATURE_HEADER: "not a signature"},
    "forged": lambda anon_id, cookie: {SIGNATURE_HEADER: f"{int(time.time()) + 60} {'A' * 43}"},
    "another-calls": lambda anon_id, cookie: signed_adoption(
        peer_signer(), "anon-someone-else", "mallory"
    ),
    "for-another-account": lambda anon_id, cookie: signed_adoption(peer_signer(), anon_id, "alice"),
    "expired": lambda anon_id, cookie: signed_adoption(
        peer_signer(), anon_id, "mallory", now=time.time() - 61
    ),
    "another-key": lambda anon_id, cookie: signed_adoption(
        AnonymousIds(b"k" * 32), anon_id, "mallory"
    ),
    # The id's own cookie (what the browser holds) is no peer's signature.
    "its-cookie": lambda anon_id, cookie: {"Cookie": f"anon_id={cookie}"},
}
