"""The gateway alone (real Traefik with the project's config) in front of small stand-in
replicas: streamed responses pass through unbuffered, and load balancing skips a replica
whose health check fails. One client address may not hold every connection: a request never
finished is cut off, and past its share of requests under way an address is refused while
others are served."""

import asyncio
import json
import re
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from avatar_devstack.ports import Ports
from avatar_devstack.settings import StackSettings
from avatar_devstack.stack import Stack
from avatar_emulators.server import serve_in_thread
from avatar_shared.errors import error_response
from avatar_shared.settings import origin_of

EVENT_GAP_S = 1.0
READ_TIMEOUT_S = 2
IN_FLIGHT = 4  # per client address
# FRONTEND_ORIGINS as an operator may write it: URLs, not bare origins.
FRONTEND_ORIGINS = " http://localhost:3000/ , HTTPS://App.Example.COM:443/chat/, http://[::1]:3000/"
BODY_LIMIT = 65536  # the gateway's, for the routers it buffers
# Errors the services answer themselves: the gateway must pass them on unchanged.
OWN_ERRORS = {
    429: ("rate_limited", "Too many messages; wait a little.", {"Retry-After": "17"}),
    502: ("llm_error", "The language model failed: out of memory.", None),
    503: ("llm_busy", "Every model slot is taken.", {"Retry-After": "9"}),
    504: ("upstream_timeout", "The language model took too long.", None),
    413: ("card_too_large", "The card's JSON is at most 1000 bytes.", None),
}
# Requests the stand-in replicas hold, by service (they run in this process).
HANGING: Counter[str] = Counter()


def replica(name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"success": True, "data": {"status": "alive"}}

    @app.get("/api/{service}/whoami")
    async def whoami(service: str) -> dict:
        return {"replica": name}

    @app.get("/api/{service}/headers")
    async def headers(service: str, request: Request) -> dict:
        return dict(request.headers)

    @app.get("/api/{service}/hang")
    async def hang(service: str) -> dict:
        HANGING[service] += 1
        try:
            await asyncio.sleep(30)
        finally:
            HANGING[service] -= 1
        return {}

    @app.api_route("/api/{service}/own/{status}", methods=["GET", "POST"])
    async def own_error(service: str, status: int) -> JSONResponse:
        """A service's own error, as chat's 502 llm_error or its 429 with Retry-After."""
        code, message, headers = OWN_ERRORS[status]
        return error_response(status, code, message, headers=headers)

    @app.get("/api/{service}/stream")
    async def stream(service: str) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"event: delta\ndata: first\n\n"
            await asyncio.sleep(EVENT_GAP_S)
            yield b"event: done\ndata: last\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/api/{service}/slow")
    async def slow(service: str, body: dict) -> StreamingResponse:
        """A reply that streams for longer than the gateway waits for a request."""

        async def events() -> AsyncIterator[bytes]:
            yield b"event: delta\ndata: first\n\n"
            await asyncio.sleep(READ_TIMEOUT_S + 1)
            yield b"event: done\ndata: last\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def crashing_replica() -> Iterator[str]:
    """A replica that passes its health check but dies on every other request it reads: its
    connection drops with no answer (a crash mid-request), so the gateway has none to give."""

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                data += chunk
            if data.startswith(b"GET /healthz"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            else:  # reset, not a clean close
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def serve(server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    with socket.create_server(("127.0.0.1", 0)) as server:
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[Stack, dict[str, ExitStack]]]:
    stops = {name: ExitStack() for name in ("a", "b")}
    urls = [stops[name].enter_context(serve_in_thread(replica(name))) for name in stops]
    crashing = stops["a"].enter_context(crashing_replica())
    servers = ",".join(urls)
    with tempfile.TemporaryDirectory(prefix="avatar-gateway-") as tmp:
        stack = Stack(
            Ports.free(emulators=False),
            StackSettings(),
            data_dir=Path(tmp),
            log_dir=Path(tmp),
            env_overrides={
                "CHAT_URLS": servers,
                "TTS_URLS": servers,
                "CHARACTERS_URLS": urls[0],
                "GEN3D_URLS": crashing,
                "GATEWAY_RESPONSE_TIMEOUT": "1s",
                "GATEWAY_HEALTHCHECK_INTERVAL": "300ms",
                "GATEWAY_READ_TIMEOUT": f"{READ_TIMEOUT_S}s",
                "GATEWAY_IN_FLIGHT_PER_ADDRESS": str(IN_FLIGHT),
                "FRONTEND_ORIGINS": FRONTEND_ORIGINS,
                "MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
            },
        )
        stack.start_gateway()
        try:
            yield stack, stops
        finally:
            stack.stop()
            for stop in stops.values():
                stop.close()


@pytest.mark.parametrize("service", ["chat", "tts"])
async def test_streamed_events_arrive_as_they_are_sent(replicas, service):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        started = time.perf_counter()
        arrivals = []
        async with client.stream("GET", f"/api/{service}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    arrivals.append((line, time.perf_counter() - started))
    assert [line for line, _ in arrivals] == ["data: first", "data: last"]
    first_at, last_at = arrivals[0][1], arrivals[1][1]
    # Buffered, the first event would arrive together with the last one.
    assert first_at < EVENT_GAP_S / 2
    assert last_at >= EVENT_GAP_S


async def test_replicas_share_the_load_and_a_dead_one_is_skipped(replicas):
    stack, stops = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        seen = {(await client.get("/api/chat/whoami")).json()["replica"] for _ in range(6)}
        assert seen == {"a", "b"}
        stops["b"].close()
        await asyncio.sleep(1.0)  # a few health-check intervals
        answers = [await client.get("/api/chat/whoami") for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 6
    assert {r.json()["replica"] for r in answers} == {"a"}


async def test_a_hung_service_gets_a_gateway_timeout(replicas):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        started = time.perf_counter()
        response = await client.get("/api/characters/hang")
    assert response.status_code == 504
    assert time.perf_counter() - started < 5
    assert_envelope(response, "service_timeout", "took too long")


def assert_envelope(response: httpx.Response, code: str, words: str) -> None:
    """The API's error envelope (shared/spec/API.md), with a message a person can act on."""
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert words in body["error"]["message"], body


async def test_a_replica_that_dies_mid_request_gets_a_bad_gateway_envelope(replicas):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        response = await client.post("/api/generate", json={"prompt": "a cat"})
    assert response.status_code == 502
    assert_envelope(response, "service_unreachable", "could not be reached")


@pytest.mark.parametrize("status", sorted(OWN_ERRORS))
@pytest.mark.parametrize("service", ["chat", "characters"])  # streamed, buffered
async def test_a_service_s_own_errors_reach_the_client_unchanged(replicas, service, status):
    """Traefik's errors middleware would replace these with its own page: the services' codes,
    messages and Retry-After must come through as they were sent."""
    stack, _ = replicas
    code, message, headers = OWN_ERRORS[status]
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        response = await client.post(f"/api/{service}/own/{status}", json={"card": "x"})
    assert response.status_code == status
    assert response.json() == {"success": False, "error": {"code": code, "message": message}}
    assert response.headers.get("retry-after") == (headers or {}).get("Retry-After")


def raw_exchange(stack: Stack, head: bytes, pause_s: float = 0.0, rest: bytes = b"") -> bytes:
    """Whatever the gateway answers to these bytes (sent in two parts, `pause_s` apart)."""
    with socket.create_connection(("127.0.0.1", stack.ports.gateway)) as conn:
        conn.sendall(head)
        if pause_s:
            time.sleep(pause_s)
            with suppress(OSError):
                conn.sendall(rest)
        conn.settimeout(READ_TIMEOUT_S * 5)
        answer = b""
        with suppress(OSError):
            while chunk := conn.recv(65536):
                answer += chunk
        return answer


@pytest.mark.parametrize("service", ["chat", "characters"])  # streamed, buffered
def test_an_upload_cut_off_by_the_read_timeout_gets_a_request_timeout_envelope(replicas, service):
    """A client still sending its body when GATEWAY_READ_TIMEOUT ends (a picture on a slow
    uplink) learns why: 408 in the envelope, not Traefik's bare 499."""
    stack, _ = replicas
    head = (
        f"POST /api/{service}/slow HTTP/1.1\r\nHost: localhost\r\n"
        'Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"a": '
    ).encode()
    answer = raw_exchange(stack, head, pause_s=READ_TIMEOUT_S + 1, rest=b'"bbbbbbbbbbbb"}')
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_timeout" and "in time" in body["error"]["message"]


async def test_a_client_that_gives_up_is_logged_as_gone_not_as_a_timeout(replicas):
    """Only an upload the read timeout cut off is answered 408: a client that leaves before
    its answer stays Traefik's 499 in the access log, so operators can tell the two apart."""
    stack, _ = replicas
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/api/tts/hang", headers={"X-Request-Id": marker}, timeout=1)
    assert (await access_log_line(stack, marker))["DownstreamStatus"] == 499


async def access_log_line(stack: Stack, marker: str) -> dict:
    """Traefik's access log line of the request whose X-Request-Id is `marker`."""
    log = next(child.log_path for child in stack.supervisor.children if child.name == "traefik")
    assert log is not None
    for _ in range(200):
        for line in log.read_text().splitlines():
            if marker in line and '"DownstreamStatus"' in line:
                found: dict = json.loads(line)
                return found
        await asyncio.sleep(0.05)
    raise AssertionError("no access log line for the request")


def from_address(stack: Stack, address: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.x.y.z is this machine)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=stack.gateway_url, transport=transport, trust_env=False)


def test_a_request_never_finished_is_cut_off(replicas):
    """A client that starts a request and never ends its headers (or body) holds a connection
    (a file descriptor of the gateway's) only until the read timeout."""
    stack, _ = replicas
    with socket.create_connection(("127.0.0.1", stack.ports.gateway)) as connection:
        connection.sendall(b"GET /api/chat/whoami HTTP/1.1\r\nHost: localhost\r\n")
        connection.settimeout(READ_TIMEOUT_S * 5)
        assert connection.recv(1024) == b""  # closed by the gateway, unanswered


async def test_a_streamed_reply_outlasts_the_read_timeout(replicas):
    """The read timeout bounds reading the request, not the reply: a chat turn streams on."""
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        started = time.perf_counter()
        async with client.stream("POST", "/api/chat/slow", json={"message": "hi"}) as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert lines == ["data: first", "data: last"]
    assert time.perf_counter() - started > READ_TIMEOUT_S


async def test_an_address_past_its_share_under_way_is_refused_while_another_is_served(replicas):
    stack, _ = replicas
    async with from_address(stack, "127.0.0.3") as hog, from_address(stack, "127.0.0.2") as other:
        held = [asyncio.create_task(hog.get("/api/chat/hang")) for _ in range(IN_FLIGHT)]
        try:
            for _ in range(100):  # until every held request is under way, at a replica
                if HANGING["chat"] == IN_FLIGHT:
                    break
                await asyncio.sleep(0.05)
            assert HANGING["chat"] == IN_FLIGHT
            refused = await hog.get("/api/chat/whoami")
            assert refused.status_code == 429, refused.text
            assert refused.headers["x-content-type-options"] == "nosniff"
            assert_envelope(refused, "too_many_requests_in_flight", "under way at once")
            assert int(refused.headers["retry-after"]) >= 1
            served = await other.get("/api/chat/whoami")
            assert served.status_code == 200 and served.json()["replica"] in {"a", "b"}
        finally:
            for request in held:
                request.cancel()
            await asyncio.gather(*held, return_exceptions=True)
        # Its requests done, the address is served again.
        for _ in range(100):
            if (await hog.get("/api/chat/whoami")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await hog.get("/api/chat/whoami")).status_code == 200


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "https://app.example.com", "http://[::1]:3000"]
)
async def test_the_gateway_allows_the_frontend_origins_the_services_allow(replicas, origin):
    """FRONTEND_ORIGINS written as URLs (a trailing slash, a path, capitals, the default port,
    an IPv6 address in brackets): the services read each as its origin; the gateway's CORS
    must allow the same origins."""
    stack, _ = replicas
    assert origin in {origin_of(url) for url in FRONTEND_ORIGINS.split(",")}
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        preflight = await client.options(
            "/api/chat/whoami",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        simple = await client.get("/api/chat/whoami", headers={"Origin": origin})
    assert preflight.headers.get("access-control-allow-origin") == origin
    assert preflight.headers.get("access-control-allow-credentials") == "true"
    assert simple.headers.get("access-control-allow-origin") == origin


async def test_a_body_past_the_gateway_s_own_limit_gets_its_413_envelope(replicas):
    """Under the limit, a service's own 413 (card_too_large) comes through, as above; past it,
    the gateway refuses the body itself, in the envelope, naming its limit."""
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        response = await client.post(
            "/api/characters/own/413", content=b"x" * (BODY_LIMIT + 1),
            headers={"content-type": "application/json"},
        )  # fmt: skip
    assert response.status_code == 413
    assert_envelope(response, "payload_too_large", f"larger than {BODY_LIMIT} bytes")


# Headers only our services send one another, each checked by its signature.
PEER_HEADERS = {
    "X-Avatar-Client-Address": "198.51.100.1 0 forged",
    "X-Avatar-Peer-Signature": "0 x",
}


@pytest.mark.parametrize("service", ["chat", "characters"])  # streamed, buffered
async def test_headers_only_peers_send_never_come_from_a_client(replicas, service):
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        response = await client.get(
            f"/api/{service}/headers", headers={**PEER_HEADERS, "X-Request-ID": "kept-1"}
        )
    seen = response.json()
    assert not {name.lower() for name in PEER_HEADERS} & set(seen), seen
    assert seen["x-request-id"] == "kept-1"


async def test_every_answer_says_its_request_id_the_gateway_s_errors_too(replicas):
    """A client that sent no X-Request-ID can still quote one: the gateway gives each request
    one, which the service sees, and says it on the answer, its own errors included."""
    stack, _ = replicas
    async with httpx.AsyncClient(base_url=stack.gateway_url, trust_env=False) as client:
        served = await client.get("/api/chat/headers")
        failed = await client.post("/api/generate", json={"prompt": "a cat"})  # 502, Traefik's
        unsafe = await client.get("/api/chat/headers", headers={"X-Request-ID": "a b"})
    made = served.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and served.json()["x-request-id"] == made
    assert failed.status_code == 502
    assert re.fullmatch(r"[0-9a-f]{32}", failed.headers["x-request-id"])
    assert failed.headers["x-request-id"] != made
    # One the services would not keep is replaced, as they would replace it.
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    assert unsafe.json()["x-request-id"] == unsafe.headers["x-request-id"]


PROXY = "127.0.0.5"  # a TLS proxy in front of the gateway, as an operator declares it


@pytest.fixture(scope="module")
def behind_a_proxy() -> Iterator[Stack]:
    """A gateway whose clients all come through a trusted proxy (GATEWAY_TRUSTED_PROXIES)."""
    with (
        serve_in_thread(replica("p")) as url,
        tempfile.TemporaryDirectory(prefix="avatar-gateway-") as tmp,
    ):
        stack = Stack(
            Ports.free(emulators=False),
            StackSettings(),
            data_dir=Path(tmp),
            log_dir=Path(tmp),
            env_overrides={
                "CHAT_URLS": url,
                "GATEWAY_HEALTHCHECK_INTERVAL": "300ms",
                "GATEWAY_IN_FLIGHT_PER_ADDRESS": str(IN_FLIGHT),
                "GATEWAY_TRUSTED_PROXIES": f"{PROXY}/32, 2001:db8::/64",
            },
        )
        stack.start_gateway()
        try:
            yield stack
        finally:
            stack.stop()


async def test_behind_a_trusted_proxy_each_client_has_its_own_share(behind_a_proxy):
    """Every connection is the proxy's: counted by it, one busy user would hold every other
    user's share. Counted by the address the proxy forwards, one user past its share is
    refused and another is served; a client around the proxy cannot pick that address."""
    stack = behind_a_proxy
    busy, other = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
    async with from_address(stack, PROXY) as proxy, from_address(stack, "127.0.0.3") as around:
        held = [
            asyncio.create_task(proxy.get("/api/memories/hang", headers=busy))
            for _ in range(IN_FLIGHT)
        ]
        # What a client reaching the gateway directly says of itself is not believed.
        held += [
            asyncio.create_task(around.get("/api/memories/hang", headers=other))
            for _ in range(IN_FLIGHT)
        ]
        try:
            for _ in range(100):  # until every held request is under way, at the replica
                if HANGING["memories"] >= 2 * IN_FLIGHT:
                    break
                await asyncio.sleep(0.05)
            assert HANGING["memories"] >= 2 * IN_FLIGHT
            refused = await proxy.get("/api/chat/whoami", headers=busy)
            assert refused.status_code == 429, refused.text
            assert_envelope(refused, "too_many_requests_in_flight", "under way at once")
            served = await proxy.get("/api/chat/whoami", headers=other)
            assert served.status_code == 200, served.text
        finally:
            for request in held:
                request.cancel()
            await asyncio.gather(*held, return_exceptions=True)
