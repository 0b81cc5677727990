"""The registry of apps (avatar_shared.registry) is the one list of them: the gateway's
routes and default addresses (gateway/traefik/dynamic/, Go templates read by Traefik)
must say what it says, and each service must serve its own paths only."""

import re

import pytest

from avatar_devstack.environment import GATEWAY_CONFIG_DIR
from avatar_shared.registry import APPS, SERVICES, load
from tests.deploy.expected import NATIVE_ROUTERS


def routed_prefixes() -> dict[str, set[str]]:
    """Each router's name and the path prefixes its rule matches."""
    return {
        name: {path.rstrip("/") or "/" for path in re.findall(r"`([^`]*)`", router["rule"])}
        for name, router in NATIVE_ROUTERS.items()
    }


# The one router that is no app's: it keeps the apps' probes and metrics from the public.
PROBES = {"internal-probes": {"/healthz", "/readyz", "/upstreamz", "/ping", "/metrics"}}


def test_the_gateway_routes_each_app_its_prefixes_and_no_more():
    expected = {spec.name: set(spec.prefixes) for spec in APPS}
    assert routed_prefixes() == expected | PROBES


def test_the_gateway_default_addresses_are_the_registry_ports():
    services = (GATEWAY_CONFIG_DIR / "dynamic" / "services.yml").read_text()
    (pairs,) = re.findall(r"\$defaults := dict (.*?) \}\}", services)
    defaults = dict(re.findall(r'"(\w+)" "(\d+)"', pairs))
    assert defaults == {spec.name.upper(): str(spec.port) for spec in APPS}


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_each_service_serves_only_below_its_prefixes(spec, redis_url):
    app = load(spec.factory)(load(spec.settings_class)(redis_url=redis_url))
    paths = list(app.openapi()["paths"])
    assert paths
    assert [p for p in paths if not p.startswith(spec.prefixes)] == []
