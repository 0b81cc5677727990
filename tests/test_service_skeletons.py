"""Every service starts, serves its health pair and its schema, and every endpoint not built
yet answers 501 in the error envelope, saying which endpoint is missing."""

import pytest
from fastapi import FastAPI

from avatar_shared.registry import SERVICES, app_spec, load
from tests.contract import missing_from, normalise

# (service, method, path, request keyword arguments) of each endpoint not built yet.
NOT_BUILT = [
    ("gen3d", "GET", "/api/generate/jobs", {}),
    ("gen3d", "DELETE", "/api/generate/4b0e6f4e-52a4-4d5e-9f57-4f3b5f0f3a11", {}),
]


def make(service: str, redis_url: str) -> FastAPI:
    spec = app_spec(service)
    return load(spec.factory)(load(spec.settings_class)(redis_url=redis_url))


@pytest.mark.parametrize(("service", "method", "path", "kwargs"), NOT_BUILT)
async def test_unbuilt_endpoints_answer_501(app_client, redis_url, service, method, path, kwargs):
    async with app_client(make(service, redis_url)) as client:
        response = await client.request(method, path, **kwargs)
    assert response.status_code == 501, response.text
    error = response.json()["error"]
    assert error["code"] == "not_implemented"
    assert "not built yet" in error["message"]
    assert error["message"].split()[0] == method


@pytest.mark.parametrize("service", [spec.name for spec in SERVICES])
async def test_health_pair_with_real_redis(app_client, redis_url, service):
    async with app_client(make(service, redis_url)) as client:
        alive = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert alive.json()["data"] == {"service": service, "status": "alive"}
    assert ready.status_code == 200


def test_services_together_cover_every_contract_endpoint(redis_url):
    served = set()
    for spec in SERVICES:
        for path, item in make(spec.name, redis_url).openapi()["paths"].items():
            served |= {(method.upper(), normalise(path)) for method in item}
    edge_paths = {("GET", p) for p in ("/", "/api/health", "/api/openapi.json", "/docs", "/redoc")}
    assert missing_from(served) == edge_paths
    assert not any(path in ("/healthz", "/readyz", "/upstreamz") for _, path in served)
