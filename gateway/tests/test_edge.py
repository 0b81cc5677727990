"""The edge on its own, with every service down: it must still answer, fast and honestly."""

import asyncio
import re
import time

import pytest
from fastapi import FastAPI

from avatar_devstack.ports import free_port, port_of
from avatar_edge.app import create_app
from avatar_edge.settings import EdgeSettings
from avatar_emulators.server import serve_in_thread


def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


def lonely_edge(redis_url: str) -> EdgeSettings:
    return EdgeSettings(
        redis_url=redis_url,
        chat_url=nowhere(),
        tts_url=nowhere(),
        characters_url=nowhere(),
        gen3d_url=nowhere(),
        auth_url=nowhere(),
        health_cache_s=60,
    )


async def test_root_is_plain_text(app_client, redis_url):
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        response = await client.get("/")
    assert response.text == "Avatar Forge Backend Running"
    assert response.headers["content-type"].startswith("text/plain")


async def test_health_with_everything_down_is_fast_and_unhealthy(app_client, redis_url):
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        started = time.perf_counter()
        response = await asyncio.wait_for(client.get("/api/health"), timeout=5)
        elapsed = time.perf_counter() - started
    data = response.json()["data"]
    assert response.status_code == 200
    assert elapsed < 2
    assert data["redis"] == "healthy"
    for key in ("backend", "llm", "tts", "gen3d", "style"):
        assert data[key] == "unhealthy", key
    assert set(data["services"].values()) == {"unhealthy"}
    assert data["gen3d_queue"] is None  # gen3d could not say
    assert data["timestamp"].endswith("Z")


def alive_app() -> FastAPI:
    app = FastAPI()
    app.get("/healthz")(lambda: {"success": True, "data": {"status": "alive"}})
    return app


@pytest.mark.parametrize(("cache_s", "chat_after"), [(60, "unhealthy"), (0, "healthy")])
async def test_health_result_is_cached(app_client, redis_url, cache_s, chat_after):
    settings = lonely_edge(redis_url).model_copy(update={"health_cache_s": cache_s})
    async with app_client(create_app(settings)) as client:
        before = (await client.get("/api/health")).json()["data"]
        with serve_in_thread(alive_app(), port=port_of(settings.chat_url)):
            after = (await client.get("/api/health")).json()["data"]
    assert before["services"]["chat"] == "unhealthy"
    assert after["services"]["chat"] == chat_after


async def test_openapi_with_services_down_is_still_a_document(app_client, redis_url):
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    assert set(response.json()["paths"]) == {
        "/",
        "/api/health",
        "/api/openapi.json",
        "/docs",
        "/redoc",
    }


# Sources that stay on the page's own origin (or in the page itself).
OWN_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}


async def test_redoc_may_load_nothing_from_another_origin(app_client, redis_url):
    """The GPU LAN may have no internet: ReDoc's page (its Redocly logo was on a CDN) allows
    this origin only, for every kind of request, and links nothing from elsewhere."""
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        page = (await client.get("/redoc")).text
    policies = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policies, "the page has no policy of its own"
    directives = {
        name: sources
        for name, *sources in (part.split() for part in policies[0].split(";") if part.strip())
    }
    assert "default-src" in directives
    fetches = {n: s for n, s in directives.items() if n.endswith("-src")}
    assert all(set(sources) <= OWN_SOURCES for sources in fetches.values()), fetches
    linked = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert linked and all(url.startswith("/") for url in linked), linked


async def test_unknown_path_gets_the_envelope(app_client, redis_url):
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("GET", "/api/chat", "chat"),
        ("POST", "/api/chat/sessions/x", "chat"),
        ("GET", "/mnt/user_assets/u/audio/a.wav", "tts"),
        ("PUT", "/api/characters/c", "characters"),
        ("DELETE", "/api/generate/j", "gen3d"),
        ("GET", "/api/auth/me", "auth"),
    ],
)
async def test_a_service_s_path_reaching_the_edge_means_no_replica_is_up(
    app_client, redis_url, method, path, service
):
    """The gateway sends a service's paths here only when none of its replicas can take them."""
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        response = await client.request(method, path)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
    assert service in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) > 0


@pytest.mark.parametrize("path", ["/api/chatroom", "/api/auth", "/mnt/user_assets"])
async def test_a_path_beside_a_service_s_is_still_no_one_s(app_client, redis_url, path):
    async with app_client(create_app(lonely_edge(redis_url))) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
