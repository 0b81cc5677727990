"""Every service starts and serves its health pair and its schema."""

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
    reading it learns what to send instead)."""
    app = make(service, redis_url)
    paths = {p: {m.upper() for m in item} for p, item in app.openapi()["paths"].items()}
    path, methods = next((p, m) for p, m in sorted(paths.items()) if "{" not in p)
    wrong = next(m for m in ("PUT", "PATCH", "DELETE", "POST") if m not in methods)
    async with app_client(app) as client:
        response = await client.request(wrong, path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert methods <= allowed and wrong not in allowed, (path, response.headers["allow"])
