"""Every service starts and serves its health pair and its schema."""

import re

import pytest
from fastapi import FastAPI

from avatar_shared.registry import SERVICES, app_spec, load
from tests.contract import missing_from, normalise


def make(service: str, redis_url: str) -> FastAPI:
    spec = app_spec(service)
    return load(spec.factory)(load(spec.settings_class)(redis_url=redis_url))


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


@pytest.mark.parametrize("service", [spec.name for spec in SERVICES])
def test_every_operation_lists_its_error_statuses_with_the_envelope(redis_url, service):
    for path, item in make(service, redis_url).openapi()["paths"].items():
        for method, operation in item.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            where = f"{method.upper()} {path}"
            assert "500" in errors and not {"4XX", "5XX"} & set(errors), where
            for status, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, where
                assert response["description"].startswith("- `"), (where, status)


@pytest.mark.parametrize("service", [spec.name for spec in SERVICES])
async def test_a_method_not_allowed_names_the_ones_that_are(app_client, redis_url, service):
    """RFC 9110: a 405 lists, in Allow, the methods the resource takes (a client or a developer
    reading it learns what to send instead): exactly those its operations document, also where
    a path such as /api/characters/import could be read as /api/characters/{character_id}."""
    app = make(service, redis_url)
    documented = {
        re.sub(r"\{[^}]+\}", "x1", path): {method.upper() for method in item}
        for path, item in app.openapi()["paths"].items()
    }
    refused = []
    async with app_client(app) as client:
        for path, methods in sorted(documented.items()):
            response = await client.options(path)
            if response.status_code != 405:
                continue  # a path a route below another's takes with any method
            refused.append(path)
            assert response.json()["error"]["code"] == "method_not_allowed"
            assert response.headers["allow"] == ", ".join(
                m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if m in methods
            ), path
    assert refused
