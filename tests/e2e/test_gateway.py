"""End to end through the real Traefik gateway, with every service, Redis and the upstream
emulators running as separate processes on free ports (the `stack` fixture)."""

import asyncio
import time

import httpx
import pytest

from tests.contract import missing_from, normalise
from tests.helpers import metric

FRONTEND = "http://localhost:3000"
JSON_TYPE = {"content-type": "application/json"}
MINIMAL = {"name": "n", "persona": "p"}


async def test_root_answers_plain_text(gateway):
    response = await gateway.get("/")
    assert response.status_code == 200
    assert response.text == "Avatar Forge Backend Running"


async def test_openapi_lists_every_contract_endpoint(gateway):
    document = (await gateway.get("/api/openapi.json")).json()
    served = {
        (method.upper(), normalise(path))
        for path, item in document["paths"].items()
        for method in item
    }
    assert missing_from(served) == set()
    assert document["openapi"].startswith("3.")
    assert "ErrorEnvelope" in document["components"]["schemas"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_load_the_merged_document(gateway, page):
    response = await gateway.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/api/openapi.json" in response.text


async def test_health_sees_emulated_upstreams(gateway):
    started = time.perf_counter()
    response = await gateway.get("/api/health")
    assert time.perf_counter() - started < 2
    data = response.json()["data"]
    assert data["backend"] == "healthy"
    assert data["llm"] == "healthy"
    assert data["tts"] == "healthy"
    # The Hunyuan3D-2 emulator stands in for the 3D server; no style server is configured.
    assert data["gen3d"] == "healthy" and data["style"] == "disabled"
    assert data["gen3d_queue"]["workers"] >= 1 and data["gen3d_queue"]["queued"] >= 0
    assert data["sign_in"] == "healthy"  # the demo OpenID provider
    assert data["redis"] == "healthy"
    assert data["services"] == dict.fromkeys(
        ["chat", "tts", "characters", "gen3d", "auth"], "healthy"
    )


async def test_credentialed_preflight_from_the_frontend_is_allowed(gateway):
    response = await gateway.options(
        "/api/chat",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_preflight_from_another_origin_gets_no_cors_headers(gateway):
    response = await gateway.options(
        "/api/chat",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in response.headers


async def test_simple_request_from_the_frontend_carries_cors_headers(gateway):
    response = await gateway.get("/api/health", headers={"Origin": FRONTEND})
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert "X-Request-ID" in response.headers["access-control-expose-headers"]


async def test_the_frontend_may_send_if_match_and_read_an_etag(gateway):
    """A character's writes take If-Match with the ETag its reads answer (a lost-update
    guard): a browser on another origin may send the one and read the other."""
    preflight = await gateway.options(
        "/api/characters/usr_0000000000000000",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type,if-match",
        },
    )
    assert preflight.status_code == 200
    assert "if-match" in preflight.headers["access-control-allow-headers"].lower()
    response = await gateway.get("/api/health", headers={"Origin": FRONTEND})
    assert "ETag" in response.headers["access-control-expose-headers"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/api/chat", {"content": b"{oops", "headers": JSON_TYPE}, 400, "invalid_json"),
        ("POST", "/api/characters", {"json": {"name": 5}}, 422, "validation_error"),
        ("PUT", "/api/characters/hermione", {"json": MINIMAL}, 403, "preset_read_only"),
        ("PUT", "/api/chat/models", {}, 405, "method_not_allowed"),
        ("GET", "/api/no-such-service", {}, 404, "not_found"),
        ("GET", "/api/chatroom", {}, 404, "not_found"),
        ("GET", "/api/generate/status/x", {}, 404, "job_not_found"),
        ("DELETE", "/api/generate/x", {}, 404, "job_not_found"),
    ],
)  # fmt: skip
async def test_errors_through_the_gateway_use_the_envelope(
    gateway, method, path, kwargs, status, code
):
    response = await gateway.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json() == {"success": False, "error": response.json()["error"]}
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("path", ["/api/characters", "/api/chat"])
async def test_oversized_bodies_are_refused_in_the_envelope(stack, gateway, path):
    # The test stack sets a small limit: a client sending far more than the gateway reads
    # sees the connection closed before it can read the 413, as with any HTTP server.
    too_big = b"x" * (int(stack.env["MAX_REQUEST_BODY_BYTES"]) + 1)
    response = await gateway.post(path, content=too_big, headers={"content-type": "text/plain"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_request_id_travels_through_the_gateway(gateway):
    response = await gateway.get("/api/chat/models", headers={"X-Request-ID": "trace-42"})
    assert response.headers["X-Request-ID"] == "trace-42"


QUIET_CHAT = {"messages": [{"role": "user", "content": "hi"}], "persona": "p", "tts_enabled": False}


async def test_redis_outage_is_reported_and_recovered_without_restarts(stack, gateway):
    ready_urls = [f"{stack.app_url(name)}/readyz" for name in stack.ports.apps]
    # Pooled connections (the rate limiter's too) are open when Redis goes away.
    assert (await gateway.post("/api/chat", json=QUIET_CHAT)).status_code == 200
    speech = (await gateway.post("/api/tts", json={"text": "정전 전에 만든 소리"})).json()["data"]
    async with httpx.AsyncClient(trust_env=False, timeout=5) as direct:
        stack.stop_redis()
        try:
            # Audio on disk is served to its owner without Redis.
            audio = await gateway.get(speech["audio_url"])
            assert audio.status_code == 200 and len(audio.content) == speech["file_size"]
            await asyncio.sleep(0.6)  # let the edge's 0.5 s health cache expire
            started = time.perf_counter()
            health = (await gateway.get("/api/health")).json()["data"]
            assert time.perf_counter() - started < 2
            assert health["redis"] == "unhealthy" and health["backend"] == "unhealthy"
            down = await asyncio.gather(*(direct.get(url) for url in ready_urls))
            assert [r.status_code for r in down] == [503] * len(ready_urls)
        finally:
            stack.start_redis()
        for _ in range(50):
            up = await asyncio.gather(*(direct.get(url) for url in ready_urls))
            if all(r.status_code == 200 for r in up):
                break
            await asyncio.sleep(0.2)
        assert [r.status_code for r in up] == [200] * len(ready_urls)
    await asyncio.sleep(0.6)
    assert (await gateway.get("/api/health")).json()["data"]["redis"] == "healthy"
    # The first chat after the outage works: dead pooled connections are retried once.
    after = await gateway.post("/api/chat", json=QUIET_CHAT)
    assert after.status_code == 200, after.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/upstreamz", "/ping", "/metrics"])
async def test_health_probes_are_not_public(gateway, path):
    response = await gateway.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_3d_queue_is_for_the_stack_not_the_public(stack, gateway):
    """Its depth and workers are read by the edge's health and the dev runner, on gen3d's own
    address; through the gateway the path is no one's, and the public document omits it."""
    for method in ("GET", "HEAD", "POST"):
        response = await gateway.request(method, "/api/generate/queue")
        assert response.status_code == 404, (method, response.text)
        if method != "HEAD":
            assert response.json()["error"]["code"] == "not_found"
    async with httpx.AsyncClient(trust_env=False) as direct:
        # Workers are counted by the stats each one writes every few seconds: a worker
        # between two writes, on a busy machine, may be missing for a moment.
        for _ in range(50):
            queue = await direct.get(f"{stack.app_url('gen3d')}/api/generate/queue")
            if queue.status_code != 200 or queue.json()["data"]["workers"] >= 1:
                break
            await asyncio.sleep(0.2)
    assert queue.status_code == 200 and queue.json()["data"]["workers"] >= 1
    document = (await gateway.get("/api/openapi.json")).json()
    assert "/api/generate/queue" not in document["paths"]
    assert "/api/generate/status/{job_id}" in document["paths"]


@pytest.mark.parametrize(
    "path", ["/", "/api/health", "/api/tts/voices", "/no/such/path", "/playground/"]
)
async def test_every_response_carries_the_security_headers(gateway, path):
    headers = (await gateway.get(path)).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "server" not in headers  # no uvicorn banner
    assert "strict-transport-security" not in headers  # http here: HSTS only for https


async def test_the_playground_page_has_a_policy_of_its_own(gateway):
    """Its files and calls only, this origin's; the API's answers keep the default policy."""
    page = (await gateway.get("/playground/")).headers["content-security-policy"]
    assert "default-src 'self'" in page and "object-src 'none'" in page
    script = (await gateway.get("/playground/main.js")).headers["content-security-policy"]
    assert script == page
    api = (await gateway.get("/api/health")).headers["content-security-policy"]
    assert api == "frame-ancestors 'none'"


async def until_answer(client: httpx.AsyncClient, path: str, done) -> httpx.Response:
    """GETs `path` until the answer is `done` (or gives up after ~10 s)."""
    for _ in range(100):
        response = await client.get(path)
        if done(response):
            break
        await asyncio.sleep(0.1)
    return response


async def test_a_service_with_no_replica_up_answers_in_the_envelope(stack, gateway):
    """Not Traefik's plain "no available server": the edge's 503, once the health checks see
    every replica gone; the other services answer on."""
    try:
        stack.stop_child("auth")
        gone = await until_answer(gateway, "/api/auth/me", lambda r: r.status_code == 503)
        assert gone.status_code == 503, gone.text
        assert gone.json()["error"]["code"] == "service_unavailable"
        assert int(gone.headers["retry-after"]) > 0
        assert "auth" in gone.json()["error"]["message"]
        posted = await gateway.post("/api/auth/logout", headers={"Origin": FRONTEND})
        assert posted.status_code == 503 and posted.json()["error"]["code"] == "service_unavailable"
        assert (await gateway.get("/api/characters/presets")).status_code == 200
    finally:
        stack.start_app("auth")
    back = await until_answer(gateway, "/api/auth/me", lambda r: r.status_code != 503)
    assert back.status_code == 401 and back.json()["error"]["code"] == "not_signed_in"


async def test_metrics_are_on_internal_ports_only(stack, gateway):
    await gateway.get("/api/characters/presets")
    async with httpx.AsyncClient(trust_env=False) as direct:
        traefik = (await direct.get(f"http://127.0.0.1:{stack.ports.gateway_metrics}/metrics")).text
        gen3d = (await direct.get(f"{stack.app_url('gen3d')}/metrics")).text
    assert metric(traefik, "traefik_entrypoint_requests_total", entrypoint="web") > 0
    assert metric(traefik, "traefik_service_requests_total", service="characters@file") > 0
    assert 'avatar_gen3d_queue_jobs{state="queued"}' in gen3d
    assert (await gateway.get("/metrics")).status_code == 404  # not through the public entry
