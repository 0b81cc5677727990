"""The behaviour every service inherits from create_service_app: the error envelope, request
ids, the body limit for streaming services, and the health probes, over a real Redis."""

import asyncio
import logging

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from redis.asyncio import ConnectionPool, Redis

from avatar_devstack.ports import free_port
from avatar_shared.app import create_service_app
from avatar_shared.errors import Conflict
from avatar_shared.health import DISABLED, HEALTHY, UNHEALTHY, Status, probe_url
from avatar_shared.settings import SharedSettings
from avatar_shared.state import BaseState, lifespan_state

router = APIRouter()
JSON_TYPE = {"content-type": "application/json"}


class Item(BaseModel):
    name: str
    count: int


@router.post("/items")
async def create_item(item: Item) -> dict:
    return {"success": True, "data": item.model_dump()}


@router.get("/conflict")
async def conflict() -> None:
    raise Conflict("That name is taken.", code="name_taken")


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@router.get("/slow-upstream")
async def slow_upstream() -> None:
    raise httpx.ReadTimeout("upstream took too long")


@router.get("/broken-upstream")
async def broken_upstream() -> None:
    raise httpx.RemoteProtocolError("peer closed connection without sending complete message")


@router.get("/upstream-500")
async def upstream_500() -> None:
    request = httpx.Request("GET", "http://upstream/")
    httpx.Response(500, request=request).raise_for_status()


@router.get("/down-upstream")
async def down_upstream() -> None:
    raise httpx.ConnectError("connection refused")


@router.post("/remember")
async def remember(request: Request) -> dict:
    """A plain Redis write (not a script), as most stores do."""
    await lifespan_state(request, BaseState)["redis"].set("remembered", "x" * 1000)
    return {"success": True}


class DyingPool(ConnectionPool):
    """A pool whose connection died under uvloop: what redis-py passes on from its write."""

    async def get_connection(self, *args, **kwargs):
        raise RuntimeError("unable to perform operation on <TCPTransport>; the handler is closed")


@router.get("/redis-connection-died")
async def redis_connection_died() -> None:
    await Redis(connection_pool=DyingPool()).get("x")


@router.get("/our-runtime-error")
async def our_runtime_error() -> None:
    raise RuntimeError("a bug of ours")


async def _always(status: Status) -> Status:
    return status


def make_app(redis_url: str, **kwargs: object) -> FastAPI:
    never_answers = f"http://127.0.0.1:{free_port()}"
    return create_service_app(
        "probe",
        SharedSettings(redis_url=redis_url, max_request_body_bytes=1000),
        router,
        upstream_checks={
            "up": lambda client: _always(HEALTHY),
            "down": lambda client: probe_url(client, never_answers),
            "hangs": lambda client: asyncio.sleep(60),
            "unset": lambda client: probe_url(client, ""),
        },
        **kwargs,
    )


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body


async def test_success_passes_through(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        response = await client.post("/items", json={"name": "a", "count": 2})
    assert response.json() == {"success": True, "data": {"name": "a", "count": 2}}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/items", {"json": {"name": "a", "count": "many"}}, 422, "validation_error"),
        ("POST", "/items", {"json": {"name": "a"}}, 422, "validation_error"),
        ("POST", "/items", {"content": b"{x", "headers": JSON_TYPE}, 400, "invalid_json"),
        ("GET", "/no-such-path", {}, 404, "not_found"),
        ("DELETE", "/items", {}, 405, "method_not_allowed"),
        ("GET", "/conflict", {}, 409, "name_taken"),
        ("GET", "/slow-upstream", {}, 504, "upstream_timeout"),
        ("GET", "/down-upstream", {}, 503, "upstream_unavailable"),
        ("GET", "/broken-upstream", {}, 502, "upstream_error"),
        ("GET", "/upstream-500", {}, 502, "upstream_error"),
    ],
)  # fmt: skip
async def test_failures_become_the_envelope(
    app_client, redis_url, method, path, kwargs, status, code
):
    async with app_client(make_app(redis_url)) as client:
        response = await client.request(method, path, **kwargs)
    assert_envelope(response, status, code)


async def test_validation_message_names_the_field(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        response = await client.post("/items", json={"name": "a", "count": "many"})
    assert "count" in response.json()["error"]["message"]


async def test_unhandled_error_hides_its_details(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        response = await client.get("/crash")
    body = assert_envelope(response, 500, "internal_error")
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert body["error"]["message"] == "Internal server error."


async def test_request_id_is_kept_or_made(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        kept = await client.get("/conflict", headers={"X-Request-ID": "abc-123"})
        made = await client.get("/conflict")
        unsafe = await client.get("/conflict", headers={"X-Request-ID": "bad id\twith tab"})
        undecodable = await client.get("/conflict", headers=[(b"X-Request-ID", b"\xff\xfe")])
    assert kept.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert unsafe.headers["X-Request-ID"] != "bad id\twith tab"
    assert undecodable.status_code == 409 and len(undecodable.headers["X-Request-ID"]) == 32


async def test_health_probes_write_no_access_line_at_info(app_client, redis_url):
    """The gateway probes /healthz every second: at the usual level (INFO) the probes must not
    fill the log, while every other request still writes its line."""
    lines: list[logging.LogRecord] = []
    catcher = logging.Handler(logging.INFO)
    catcher.emit = lines.append  # type: ignore[method-assign]
    access = logging.getLogger("avatar.access")
    async with app_client(make_app(redis_url)) as client:
        access.addHandler(catcher)
        try:
            for path in ("/healthz", "/readyz", "/conflict"):
                await client.get(path)
        finally:
            access.removeHandler(catcher)
    assert [line.fields["path"] for line in lines] == ["/conflict"]  # type: ignore[attr-defined]


async def test_streaming_services_refuse_large_bodies(app_client, redis_url):
    async with app_client(make_app(redis_url, streams_responses=True)) as client:
        declared = await client.post("/items", content=b"x" * 1001)

        async def chunks():
            for _ in range(5):
                yield b" " * 300

        chunked = await client.post(
            "/items", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await client.post("/items", json={"name": "a", "count": 1})
    assert_envelope(declared, 413, "payload_too_large")
    assert_envelope(chunked, 413, "payload_too_large")
    assert small.status_code == 200


async def test_health_probes(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        alive = await client.get("/healthz")
        ready = await client.get("/readyz")
        upstreams = await client.get("/upstreamz")
    assert alive.json()["data"]["status"] == "alive"
    assert ready.status_code == 200
    assert upstreams.json()["data"] == {
        "up": HEALTHY,
        "down": UNHEALTHY,
        "hangs": UNHEALTHY,
        "unset": DISABLED,
    }


async def test_readyz_fails_fast_without_redis(app_client):
    app = make_app(f"redis://127.0.0.1:{free_port()}/0")
    async with app_client(app) as client:
        response = await asyncio.wait_for(client.get("/readyz"), timeout=5)
    assert_envelope(response, 503, "not_ready")


async def test_a_full_redis_refusing_a_plain_command_is_storage_full(app_client, redis_url, redis):
    async with app_client(make_app(redis_url)) as client:
        used = int((await redis.info("memory"))["used_memory"])
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", used)
        try:
            refused = await client.post("/remember")
        finally:
            await redis.config_set("maxmemory", 0)
    assert_envelope(refused, 503, "storage_full")
    assert await redis.get("remembered") is None


async def test_a_redis_connection_dying_under_uvloop_is_redis_unavailable(app_client, redis_url):
    async with app_client(make_app(redis_url)) as client:
        died = await client.get("/redis-connection-died")
        ours = await client.get("/our-runtime-error")
    assert_envelope(died, 503, "redis_unavailable")
    assert_envelope(ours, 500, "internal_error")
