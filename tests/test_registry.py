"""The registry of apps (avatar_shared.registry) is the one list of them: the gateway's
routes and default addresses (rendered from it by `make routes`) must say what it says, each
service must serve its own paths only, and limit request bodies itself when it streams."""

import re

import pytest

from avatar_devstack.routes import services_yml
from avatar_shared.body_limit import BodySizeLimitMiddleware
from avatar_shared.registry import APPS, PEER_PREFIX, SERVICES, load
from tests.deploy.expected import NATIVE_ROUTERS


def routed_prefixes() -> dict[str, set[str]]:
    """Each router's name and the path prefixes its rule matches."""
    return {
        name: {path.rstrip("/") or "/" for path in re.findall(r"`([^`]*)`", router["rule"])}
        for name, router in NATIVE_ROUTERS.items()
    }


# The routers that are no app's own: one keeps the apps' probes and metrics, the paths the
# registry marks internal and the services' calls to one another (below PEER_PREFIX) from the
# public; one gives the edge's playground page its policy.
PROBES = {
    "internal-probes": {"/healthz", "/readyz", "/upstreamz", "/ping", "/metrics"}
    | {path for spec in APPS for path in spec.internal_paths}
    | {PEER_PREFIX.rstrip("/")},
    "playground": {"/playground"},
}


def test_the_gateway_routes_each_app_its_prefixes_and_no_more():
    expected = {spec.name: {p.rstrip("/") or "/" for p in spec.prefixes} for spec in APPS}
    assert routed_prefixes() == expected | PROBES


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_the_gateway_default_address_is_the_registry_port(spec):
    replicas = f'(env "{spec.name.upper()}_URLS" | default "http://127.0.0.1:{spec.port}")'
    assert replicas in services_yml()


def service_app(spec, redis_url, **settings):
    return load(spec.factory)(load(spec.settings_class)(redis_url=redis_url, **settings))


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_each_service_serves_only_below_its_prefixes(spec, redis_url):
    paths = list(service_app(spec, redis_url).openapi()["paths"])
    assert paths
    assert [p for p in paths if not p.startswith(spec.prefixes)] == []


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_a_service_limits_request_bodies_itself_when_it_streams(spec, redis_url):
    """The gateway buffers (and so limits) the requests of the others only. (gen3d limits its
    uploads itself as well, at MAX_UPLOAD_BYTES: not this limit.)"""
    app = service_app(spec, redis_url, max_request_body_bytes=12345)
    limits = {
        m.kwargs["max_bytes"] for m in app.user_middleware if m.cls is BodySizeLimitMiddleware
    }
    assert (12345 in limits) == spec.streams


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_an_internal_path_is_one_the_app_serves(spec, redis_url):
    """An internal path keeps one of the app's own paths from the public: a typo would leave
    the real path public and hide nothing."""
    paths = set(service_app(spec, redis_url).openapi()["paths"])
    assert set(spec.internal_paths) <= paths
