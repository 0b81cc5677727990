"""deploy/compose.yml: valid Compose (checked against the Compose Specification's schema, as
`docker compose config` would, since no Docker engine runs here), every app built from its
own package and routed by labels that say what make run's routers say, health-gated,
scalable, with its keys as files and Redis durable."""

import json
import re
from ipaddress import ip_address, ip_network

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from avatar_devstack.environment import REPO_ROOT
from avatar_shared.registry import APPS, load
from tests.deploy.expected import (
    BUFFERED_ON_DISK_BYTES,
    BUFFERED_PER_ADDRESS,
    DEPLOY_DIR,
    LONGEST_CHAT_REPLY_S,
    NATIVE_ROUTERS,
    RULE_MIDDLEWARES,
    RULE_SERVICES,
    RULE_TRANSPORTS,
    SECRET_VARIABLES,
    compose_default,
    keys_read_by,
    transport_of,
    without_provider,
)

SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE = yaml.safe_load((DEPLOY_DIR / "compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
# Where the GPU upstreams answer by default: the `demo` emulators and the `gpu` containers.
UPSTREAM_VARIABLES = {"OLLAMA_BASE_URL": "chat", "TTS_BASE_URL": "tts", "GEN3D_BASE_URL": "gen3d"}


def label_routers() -> dict[str, dict]:
    """Every app's Traefik router labels, as the native routers.yml spells a router."""
    routers: dict[str, dict] = {}
    for service in SERVICES.values():
        for key, value in service.get("labels", {}).items():
            if match := re.fullmatch(r"traefik\.http\.routers\.([\w-]+)\.(.+)", key):
                routers.setdefault(match[1], {})[match[2]] = value
    return {
        name: {
            "rule": labels["rule"],
            "service": without_provider(labels["service"]),
            "middlewares": [without_provider(m) for m in labels["middlewares"].split(",")],
            **({"priority": int(labels["priority"])} if "priority" in labels else {}),
            **(
                {"observability": {"accessLogs": labels["observability.accesslogs"] == "true"}}
                if "observability.accesslogs" in labels
                else {}
            ),
        }
        for name, labels in routers.items()
    }


def image_has_healthcheck(service: dict) -> bool:
    build = service.get("build")
    if not build:
        return False
    dockerfile = DEPLOY_DIR / build["context"] / build["dockerfile"]
    return bool(re.search(r"^HEALTHCHECK ", dockerfile.read_text(), re.M))


def test_compose_file_follows_the_spec():
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(COMPOSE)


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_every_app_is_built_from_its_own_package(spec):
    build = SERVICES[spec.name]["build"]
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert build["args"] == {"PACKAGE": spec.project, "FOLDER": spec.folder, "APP": spec.factory}
    pyproject = (REPO_ROOT / spec.folder / "pyproject.toml").read_text()
    assert f'name = "{spec.project}"' in pyproject


def test_the_gen3d_workers_run_gen3d_s_image_on_its_own():
    worker, gen3d = SERVICES["gen3d-worker"], SERVICES["gen3d"]
    assert (worker["image"], worker["build"]) == (gen3d["image"], gen3d["build"])
    assert worker["command"] == ["python", "-m", "avatar_gen3d.worker"]
    assert "labels" not in worker  # no route: it takes jobs from Redis


def test_the_labels_route_what_make_run_routes():
    assert label_routers() == NATIVE_ROUTERS


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_each_app_is_balanced_health_checked_with_its_transport(spec):
    labels = SERVICES[spec.name]["labels"]
    prefix = f"traefik.http.services.{spec.name}.loadbalancer"
    assert labels["traefik.enable"] == "true"
    assert labels[f"{prefix}.server.port"] == "8000"
    assert labels[f"{prefix}.healthcheck.path"] == "/healthz"
    assert labels[f"{prefix}.serverstransport"] == f"{transport_of(spec.name)}@file"


def test_labels_name_only_rules_the_shared_file_defines():
    used = {m for router in label_routers().values() for m in router["middlewares"]}
    assert used <= RULE_MIDDLEWARES
    transports = {
        without_provider(value)
        for service in SERVICES.values()
        for key, value in service.get("labels", {}).items()
        if key.endswith(".serverstransport")
    }
    assert transports <= RULE_TRANSPORTS
    shared = {r["service"] for r in label_routers().values() if r["service"] not in SERVICES}
    assert shared <= RULE_SERVICES  # each service's failover
    assert shared == {f"{spec.name}-or-unavailable" for spec in APPS if spec.name != "edge"}


def test_the_gateway_reads_labels_and_the_shared_rules_only():
    providers = yaml.safe_load(SERVICES["gateway"]["environment"]["GATEWAY_PROVIDERS"])
    assert providers["file"] == {"filename": "/etc/traefik/dynamic/rules.yml"}
    docker = providers["docker"]
    assert docker["exposedByDefault"] is False  # a container is routed only when it says so
    assert docker["network"] == COMPOSE["networks"]["backend"]["name"]
    # The Docker API through the proxy, on a network of its own: no app reaches it.
    host = re.fullmatch(r"tcp://([\w-]+):\d+", docker["endpoint"])[1]
    assert COMPOSE["networks"][host]["internal"] is True
    on_it = {name for name, service in SERVICES.items() if host in service.get("networks", [])}
    assert on_it == {"gateway", host}
    assert all("docker.sock" not in v for v in SERVICES["gateway"].get("volumes", []))


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(name):
    service = SERVICES[name]
    assert "healthcheck" in service or image_has_healthcheck(service)
    assert not service.get("healthcheck", {}).get("disable")


@pytest.mark.parametrize("name", SERVICES)
def test_every_container_s_log_is_rotated(name):
    """Docker's default json-file driver keeps a container's whole log: a flood of requests
    (the gateway's access log) or of errors would fill the host's disk."""
    logging = SERVICES[name]["logging"]
    assert logging["driver"] == "json-file"
    assert re.fullmatch(r"\d+[km]", logging["options"]["max-size"])
    assert int(logging["options"]["max-file"]) >= 1


def test_start_waits_for_health():
    for spec in APPS:
        assert SERVICES[spec.name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert SERVICES["gateway"]["depends_on"]["edge"] == {"condition": "service_healthy"}


def test_only_the_gateway_is_reachable_from_the_host():
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    # The demo OpenID provider as well: browsers sign in on its own pages (demo profile).
    assert published == {"gateway", "oidc-provider"}
    assert SERVICES["oidc-provider"]["profiles"] == ["demo"]


@pytest.mark.parametrize("name", [*(spec.name for spec in APPS), "gen3d-worker"])
def test_apps_can_scale_and_redeploy_alone(name):
    service = SERVICES[name]
    # --scale: no fixed name or host port; --no-deps redeploy: an image of its own name.
    assert "container_name" not in service and "ports" not in service
    assert service["image"].startswith(f"avatar-forge/{name.removesuffix('-worker')}:")


@pytest.mark.parametrize("name", SERVICES)
def test_no_key_is_in_any_environment(name):
    environment = SERVICES[name].get("environment", {})
    assert not SECRET_VARIABLES & set(environment)


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_each_app_gets_the_key_files_it_reads_and_no_others(spec):
    assert set(SERVICES[spec.name].get("secrets", [])) == keys_read_by(spec)
    declared = COMPOSE["secrets"]
    assert all(declared[key]["file"] == f"./secrets/{key}" for key in keys_read_by(spec))


def test_auth_reads_its_signing_keys_from_the_secret():
    assert SERVICES["auth"]["environment"]["SIGNING_KEYS_FILE"] == "/run/secrets/auth_signing_keys"


def test_fixed_addresses_are_outside_the_range_docker_hands_out():
    """Docker gives a container with no fixed address the next free one of `ip_range`, or of
    the whole subnet when there is none, from its start: Redis, started first, would take
    the gateway's 172.30.0.2 and the gateway would fail to start (docker/compose#10926)."""
    (ipam,) = COMPOSE["networks"]["backend"]["ipam"]["config"]
    subnet = ip_network(compose_default(ipam["subnet"]))
    handed_out = ip_network(compose_default(ipam["ip_range"]))
    assert handed_out.subnet_of(subnet)
    fixed = [
        ip_address(compose_default(network["ipv4_address"]))
        for service in SERVICES.values()
        if isinstance(service.get("networks"), dict)
        for network in service["networks"].values()
        if network and "ipv4_address" in network
    ]
    assert fixed  # the gateway's at least
    for address in fixed:
        assert address in subnet and address not in handed_out
        assert address not in (subnet.network_address + 1, subnet.broadcast_address)


def test_apps_believe_forwarded_addresses_from_the_gateway_alone():
    gateway = SERVICES["gateway"]["networks"]["backend"]["ipv4_address"]
    subnet = COMPOSE["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert ip_address(compose_default(gateway)) in ip_network(compose_default(subnet))
    for spec in APPS:
        environment = container_environment(spec.name, {})
        assert environment["FORWARDED_ALLOW_IPS"] == compose_default(gateway)
        assert SERVICES[spec.name]["networks"] == ["backend"]


def test_behind_a_tls_proxy_the_gateway_and_the_apps_believe_it():
    """The gateway keys its in-flight limit on the address a trusted proxy forwards; the apps
    see that proxy's address after the client's in X-Forwarded-For, so they must believe it
    as well, or every client behind it would be one address to them."""
    dotenv = {"GATEWAY_TRUSTED_PROXIES": "172.30.0.1,2001:db8::/64"}
    gateway = container_environment("gateway", dotenv)
    assert gateway["GATEWAY_TRUSTED_PROXIES"] == "172.30.0.1,2001:db8::/64"
    for spec in APPS:
        allowed = container_environment(spec.name, dotenv)["FORWARDED_ALLOW_IPS"]
        assert allowed == "172.30.0.2,172.30.0.1,2001:db8::/64"


@pytest.mark.parametrize("name", [*(spec.name for spec in APPS), "gen3d-worker"])
def test_apps_read_deploy_env_never_make_run_s(name):
    """The repository's .env is make run's (var/ paths, loopback addresses)."""
    (env_file,) = SERVICES[name]["env_file"]
    assert (DEPLOY_DIR / env_file["path"]).resolve() == DEPLOY_DIR / ".env"
    assert SERVICES[name]["environment"]["ASSETS_DIR"] == "/data/user_assets"


@pytest.mark.parametrize("name", ["chat", "tts", "gen3d-worker"])
def test_replica_counts_are_settings_that_outlast_the_next_up(name):
    replicas = SERVICES[name]["deploy"]["replicas"]
    variable = re.fullmatch(r"\$\{(\w+)_REPLICAS:-1\}", replicas)[1]
    assert variable == name.upper().replace("-", "_")


def test_the_gateway_s_tmp_holds_one_address_s_uploads_under_way():
    """The body limit holds each body whole, past its first bytes in a file under /tmp: a
    tmpfs, which is memory, so it has a size, one that one address's uploads fit."""
    gateway = SERVICES["gateway"]
    (tmpfs,) = gateway["tmpfs"]
    size = re.fullmatch(r"/tmp:size=(\d+)([kmg])", tmpfs)
    assert size, tmpfs
    assert gateway["read_only"] is True
    tmp_bytes = int(size[1]) * 1024 ** ("kmg".index(size[2]) + 1)
    environment = gateway["environment"]
    assert compose_default(environment["MAX_REQUEST_BODY_BYTES"]) == str(BUFFERED_ON_DISK_BYTES)
    assert BUFFERED_PER_ADDRESS * BUFFERED_ON_DISK_BYTES <= tmp_bytes


def test_a_stopped_chat_replica_finishes_its_replies_first():
    """`up` after a change, or a lower CHAT_REPLICAS, stops replicas mid-reply: Docker kills
    one after its grace period (10 s by default), before the longest reply is done."""
    grace = re.fullmatch(r"(\d+)s", SERVICES["chat"]["stop_grace_period"])
    assert grace and int(grace[1]) > LONGEST_CHAT_REPLY_S


def test_redis_keeps_every_write_within_a_second_and_never_evicts():
    redis = SERVICES["redis"]
    flags = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    # The services' user-data budgets are shares of what this Redis may hold.
    for spec in APPS:
        assert SERVICES[spec.name]["environment"]["REDIS_MAXMEMORY"] == flags["--maxmemory"]
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in COMPOSE["volumes"]
    assert "ports" not in redis


def test_user_assets_are_shared_only_by_the_services_that_own_them():
    mounting = {
        name
        for name, service in SERVICES.items()
        if any(v.startswith("user-assets:") for v in service.get("volumes", []))
    }
    assert mounting == {"tts", "gen3d", "gen3d-worker"}
    dockerfile = (DEPLOY_DIR / "Dockerfile").read_text()
    assert "ASSETS_DIR=/data/user_assets" in dockerfile  # where the volume is mounted


def answering(profile: str) -> set[str]:
    """The names that answer in the backend network under --profile `profile`."""
    names = set()
    for name, service in SERVICES.items():
        if profile in service.get("profiles", []):
            names.add(name)
            networks = service["networks"]
            if isinstance(networks, dict):
                names |= set(networks["backend"].get("aliases", []))
    return names


@pytest.mark.parametrize("profile", ["demo", "gpu"])
def test_each_upstream_profile_answers_at_the_apps_default_addresses(profile):
    for variable, reader in UPSTREAM_VARIABLES.items():
        host = re.search(r"http://([\w-]+):", SERVICES[reader]["environment"][variable])[1]
        assert host in answering(profile), f"{variable}: nothing answers at {host} ({profile})"


def test_the_gpu_profile_reserves_a_gpu_for_each_upstream():
    gpu = [s for s in SERVICES.values() if "gpu" in s.get("profiles", [])]
    assert len(gpu) == 3
    for service in gpu:
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# --- The documented quick start: `cp .env.example deploy/.env` (docs/operations.md).
DOCUMENTED_ENV = {k: v or "" for k, v in dotenv_values(REPO_ROOT / ".env.example").items()}
# Addresses a browser is sent to, not ones a container calls: localhost is right for them.
BROWSER_FACING = {"PUBLIC_BASE_URL", "FRONTEND_URL", "FRONTEND_ORIGINS"}
LOOPBACK = re.compile(r"//(localhost|127\.\d+\.\d+\.\d+|\[::1\])[:/]|//(localhost|127\.0\.0\.1)$")


def interpolate(value: object, variables: dict[str, str]) -> str:
    """Compose's interpolation of one value: `${NAME}`, `${NAME:-default}` (default when
    unset or empty), `${NAME-default}` (when unset), `${NAME:+other}` (other when set and
    not empty), `$$` for a plain `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, default = match["name"], match["operator"], match["default"] or ""
        got = variables.get(name)
        if operator == ":-":
            return got or default
        if operator == "-":
            return default if got is None else got
        if operator == ":+":
            return default if got else ""
        return got or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<operator>:?-|:\+)(?P<default>[^}]*))?\}"
    return re.sub(pattern, substitute, str(value))


def container_environment(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """What a service's container gets with `dotenv` as deploy/.env: its env_file, then its
    `environment` (which wins), interpolated from that same file."""
    service = SERVICES[name]
    environment = {k: interpolate(v, dotenv) for k, v in service.get("environment", {}).items()}
    return {**dotenv, **environment}


def reads(spec, variable: str) -> bool:
    return variable.lower() in load(spec.settings_class).model_fields


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_with_the_documented_env_no_app_calls_its_own_container(spec):
    """Every address an app calls, with .env.example copied to deploy/.env as the docs say:
    make run's loopback addresses (the GPU upstreams', the peers') would reach the container
    itself."""
    environment = container_environment(spec.name, DOCUMENTED_ENV)
    calls = {
        variable: value
        for variable, value in environment.items()
        if variable.endswith("_URL") and variable not in BROWSER_FACING and reads(spec, variable)
    }
    assert calls  # the peers at least
    loopback = {variable: value for variable, value in calls.items() if LOOPBACK.search(value)}
    assert not loopback


@pytest.mark.parametrize("profile", ["demo", "gpu"])
def test_with_the_documented_env_each_upstream_profile_is_reached(profile):
    for variable, reader in UPSTREAM_VARIABLES.items():
        url = container_environment(reader, DOCUMENTED_ENV)[variable]
        host = re.search(r"http://([\w-]+):", url)[1]
        assert host in answering(profile), f"{variable}: {url} under --profile {profile}"


def test_with_the_documented_env_speech_is_local_unless_a_gpu_server_is_said():
    """As make run without emulators: no GPT-SoVITS server is configured, so the local engine
    speaks (TTS_ENGINE=gpt-sovits in the copied .env is make run's setting, not compose's)."""
    assert container_environment("tts", DOCUMENTED_ENV)["TTS_ENGINE"] == "local"
    gpu_box = {
        **DOCUMENTED_ENV,
        "DEPLOY_TTS_ENGINE": "gpt-sovits",
        "GPU_BOX_TTS_URL": "http://gpu-box.lan:9880",
        "GPU_BOX_OLLAMA_URL": "http://gpu-box.lan:11434",
        "GPU_BOX_VLLM_URL": "http://gpu-box.lan:8002",
        "GPU_BOX_GEN3D_URL": "http://gpu-box.lan:8081",
    }
    tts = container_environment("tts", gpu_box)
    assert (tts["TTS_ENGINE"], tts["TTS_BASE_URL"]) == ("gpt-sovits", "http://gpu-box.lan:9880")
    chat = container_environment("chat", gpu_box)
    assert chat["OLLAMA_BASE_URL"] == "http://gpu-box.lan:11434"
    assert chat["VLLM_BASE_URL"] == "http://gpu-box.lan:8002"
    assert container_environment("gen3d", gpu_box)["GEN3D_BASE_URL"] == "http://gpu-box.lan:8081"
