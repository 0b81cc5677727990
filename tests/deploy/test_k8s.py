"""deploy/k8s: each overlay renders (`kubectl kustomize`), every object is valid against the
Kubernetes schemas (kubernetes-validate, strict), and the manifests say what the rest of the
project says: one Deployment, Service and PodDisruptionBudget per app, probes, measured
resources, autoscaling where load grows, make run's routes, and keys only from the Secret."""

import re
import subprocess
from functools import cache

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from avatar_devstack.routes import FAILOVER_SUFFIX
from avatar_devstack.stack import find_binary
from avatar_edge.app import create_app
from avatar_shared.registry import APPS, SERVICES
from avatar_shared.settings import redis_bytes
from tests.deploy.expected import (
    BUFFERED_IN_MEMORY_BYTES,
    BUFFERED_ON_DISK_BYTES,
    BUFFERED_PER_ADDRESS,
    DEPLOY_DIR,
    DYNAMIC_DIR,
    LONGEST_CHAT_REPLY_S,
    NATIVE_ROUTERS,
    RULE_MIDDLEWARES,
    RULE_TRANSPORTS,
    SECRET_VARIABLES,
    TRAEFIK_IDLE_BYTES,
    TRAEFIK_PER_REQUEST_BYTES,
    keys_read_by,
    transport_of,
    without_provider,
)

OVERLAYS = ["dev", "prod"]
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests are checked against
AUTOSCALED = {"chat", "tts", "gen3d-worker"}
# Kinds kubernetes-validate has no schema for (custom resources): checked below instead.
CUSTOM_KINDS = {"IngressRoute"}


@cache
def rendered(overlay: str) -> tuple[dict, ...]:
    out = subprocess.run(
        [find_binary("kubectl"), "kustomize", str(DEPLOY_DIR / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return tuple(yaml.safe_load_all(out.stdout))


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config(overlay: str) -> dict[str, str]:
    (config_map,) = objects(overlay, "ConfigMap").values()
    return config_map["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay):
    for obj in rendered(overlay):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_app_has_a_deployment_a_service_and_a_disruption_budget(overlay):
    names = {spec.name for spec in APPS}
    assert set(objects(overlay, "Deployment")) == names | {"gen3d-worker", "gateway"}
    assert names | {"gateway"} <= set(objects(overlay, "Service"))
    assert set(objects(overlay, "PodDisruptionBudget")) >= names | {"gen3d-worker", "gateway"}
    for name, budget in objects(overlay, "PodDisruptionBudget").items():
        assert budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_each_app_is_probed_limited_and_locked_down(overlay, spec):
    deployment = objects(overlay, "Deployment")[spec.name]
    pod = deployment["spec"]["template"]["spec"]
    app = container(deployment)
    untagged = re.sub(r":[\w.-]+$", "", app["image"])
    assert untagged.endswith(f"avatar-forge/{spec.name}")
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The edge stays ready without Redis (see test_the_edge_stays_ready_without_redis).
    ready = "/healthz" if spec.name == "edge" else "/readyz"
    assert app["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}
    assert {"name": "http", "containerPort": 8000} in app["ports"]
    service = objects(overlay, "Service")[spec.name]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    resources = app["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert app["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gen3d_workers_run_gen3d_s_image_and_prove_they_are_alive(overlay):
    deployments = objects(overlay, "Deployment")
    pod = deployments["gen3d-worker"]["spec"]["template"]["spec"]
    worker = container(deployments["gen3d-worker"])
    assert worker["image"] == container(deployments["gen3d"])["image"]
    assert worker["livenessProbe"]["exec"]["command"][-1] == "--alive"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_pod_gets_service_link_variables(overlay):
    """Kubernetes would set <SERVICE>_PORT=tcp://... for every Service of the namespace: the
    Service `gateway` alone would replace the gateway's GATEWAY_PORT."""
    workloads = [
        *objects(overlay, "Deployment").values(),
        *objects(overlay, "StatefulSet").values(),
    ]
    for workload in workloads:
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_states_every_setting_its_static_file_needs(overlay):
    placeholders = set(re.findall(r"\$\{(\w+)\}", (DYNAMIC_DIR.parent / "traefik.yml").read_text()))
    gateway = container(objects(overlay, "Deployment")["gateway"])
    assert placeholders <= {e["name"] for e in gateway["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_chat_replica_told_to_stop_finishes_its_replies_first(overlay):
    """Scale-down and rolling updates stop a replica mid-reply: Kubernetes kills it after
    its grace period (30 s by default), before the longest reply is done."""
    pod = objects(overlay, "Deployment")["chat"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > LONGEST_CHAT_REPLY_S


def quantity(value: str) -> int:
    """A Kubernetes quantity in bytes: 256Mi, 5Gi."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", value).groups()
    return int(number) * 1024 ** (" KMGT".index(unit[0]) if unit else 0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_address_s_uploads_under_way_fit_the_gateway_s_memory_and_tmp(overlay):
    """The body limit holds each body whole before sending it on: one address's uploads under
    way (its share on each buffering router) must not take the gateway past its memory
    limit (at 1 MiB in memory each, 500 of them took it from 97 to 710 MB), nor past its
    /tmp, where the rest of each body waits."""
    assert not {"GATEWAY_IN_FLIGHT_PER_ADDRESS", "MAX_REQUEST_BODY_BYTES"} & set(config(overlay))
    deployment = objects(overlay, "Deployment")["gateway"]
    memory = quantity(container(deployment)["resources"]["limits"]["memory"])
    held = BUFFERED_PER_ADDRESS * (BUFFERED_IN_MEMORY_BYTES + TRAEFIK_PER_REQUEST_BYTES)
    assert TRAEFIK_IDLE_BYTES + held <= memory
    (tmp,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    assert BUFFERED_PER_ADDRESS * BUFFERED_ON_DISK_BYTES <= quantity(tmp["emptyDir"]["sizeLimit"])
    assert "medium" not in tmp["emptyDir"]  # the node's disk: not counted as the pod's memory


def test_users_files_are_shared_across_nodes_in_prod_and_on_one_node_in_dev():
    prod = objects("prod", "PersistentVolumeClaim")["user-assets"]["spec"]
    assert prod["accessModes"] == ["ReadWriteMany"] and prod["storageClassName"]
    dev = objects("dev", "PersistentVolumeClaim")["user-assets"]["spec"]
    assert dev["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_load_grows_is_autoscaled(overlay):
    autoscalers = objects(overlay, "HorizontalPodAutoscaler")
    assert set(autoscalers) == AUTOSCALED
    for name, autoscaler in autoscalers.items():
        assert autoscaler["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in objects(overlay, "Deployment")[name]["spec"]  # the HPA's


def test_production_keeps_two_replicas_of_every_service():
    for name, deployment in objects("prod", "Deployment").items():
        if name in AUTOSCALED:
            minimum = objects("prod", "HorizontalPodAutoscaler")[name]["spec"]["minReplicas"]
            assert minimum >= (1 if name == "gen3d-worker" else 2)
        else:
            assert deployment["spec"]["replicas"] >= 2, name


SERVICE_NAMES = {spec.name for spec in SERVICES}


def ingress_routers(overlay: str) -> dict[str, dict]:
    """The IngressRoute's routes as routers.yml spells routers, by their service's name
    (the edge has three: its catch-all, the probes' 404 and the playground page). A route
    leads to its app's Service where routers.yml names the app's failover: a Service with
    no ready pod has no route, so its paths reach the edge as a failover's would."""
    (route,) = objects(overlay, "IngressRoute").values()
    routers = {}
    for rule in route["spec"]["routes"]:
        (service,) = rule["services"]
        name = service["name"]
        middlewares = [m["name"] for m in rule["middlewares"]]
        if "not-routed@file" in middlewares:
            name = "internal-probes"
        elif "playground-csp@file" in middlewares:
            name = "playground"
        routers[name] = {
            "rule": rule["match"],
            "service": service["name"] + (FAILOVER_SUFFIX if name in SERVICE_NAMES else ""),
            "middlewares": [without_provider(m["name"]) for m in rule["middlewares"]],
            **({"priority": rule["priority"]} if "priority" in rule else {}),
            **({"observability": rule["observability"]} if "observability" in rule else {}),
        }
    return routers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_routes_what_make_run_routes(overlay):
    assert ingress_routers(overlay) == NATIVE_ROUTERS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_names_only_the_shared_rules_and_each_app_s_transport(overlay):
    (route,) = objects(overlay, "IngressRoute").values()
    for rule in route["spec"]["routes"]:
        assert {without_provider(m["name"]) for m in rule["middlewares"]} <= RULE_MIDDLEWARES
        (service,) = rule["services"]
        transport = without_provider(service["serversTransport"])
        assert transport in RULE_TRANSPORTS and transport == transport_of(service["name"])
        assert service["name"] in objects(overlay, "Service")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_reads_its_own_namespace_only(overlay):
    kinds = {obj["kind"] for obj in rendered(overlay)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    env = {
        e["name"]: e.get("value")
        for e in container(objects(overlay, "Deployment")["gateway"])["env"]
    }
    providers = yaml.safe_load(env["GATEWAY_PROVIDERS"])
    assert providers["file"] == {"filename": "/etc/traefik/dynamic/rules.yml"}
    assert providers["kubernetesCRD"]["namespaces"] == ["$(POD_NAMESPACE)"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_with_no_ready_pod_falls_through_to_the_edge(overlay):
    """Traefik's kubernetesCRD provider drops a route whose Service has no ready pod
    (allowEmptyServices false, its default): that service's paths then reach the edge's
    catch-all, which answers them with the 503 envelope. allowEmptyServices would keep the
    route and answer Traefik's own plain-text 503 instead (no envelope, spec/API.md). This
    holds only while the edge itself stays ready, Redis or not (the test below)."""
    env = {
        e["name"]: e.get("value")
        for e in container(objects(overlay, "Deployment")["gateway"])["env"]
    }
    providers = yaml.safe_load(env["GATEWAY_PROVIDERS"])
    assert providers["kubernetesCRD"].get("allowEmptyServices", False) is False
    catch_all = ingress_routers(overlay)["edge"]
    assert (catch_all["rule"], catch_all["service"]) == ("PathPrefix(`/`)", "edge")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_stays_ready_without_redis(overlay, monkeypatch):
    """/readyz fails while Redis is down: were it the edge's readiness, the edge's Service
    would empty with every other one, and /api/health and the catch-all with it. Its
    readiness path answers 200 with Redis unreachable."""
    probe = container(objects(overlay, "Deployment")["edge"])["readinessProbe"]["httpGet"]
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setenv("REDIS_TIMEOUT_S", "0.2")
    with TestClient(create_app()) as client:
        assert client.get("/readyz").status_code == 503  # Redis is indeed unreachable
        assert client.get(probe["path"]).status_code == 200


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keys_come_only_from_the_secret_each_app_mounting_what_it_reads(overlay):
    assert objects(overlay, "Secret") == {}  # made from deploy/secrets, never in git
    assert not SECRET_VARIABLES & set(config(overlay))
    deployments = objects(overlay, "Deployment")
    for spec in APPS:
        volumes = deployments[spec.name]["spec"]["template"]["spec"].get("volumes", [])
        mounted = {
            item["key"]
            for volume in volumes
            if "secret" in volume
            for item in volume["secret"]["items"]
        }
        assert mounted == keys_read_by(spec), spec.name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_apps_believe_forwarded_addresses_from_the_pod_network_behind_a_policy(overlay):
    assert re.fullmatch(r"[\d.]+/\d+", config(overlay)["FORWARDED_ALLOW_IPS"])
    (policy,) = [
        p for p in objects(overlay, "NetworkPolicy").values()
        if p["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "app"}
    ]  # fmt: skip
    allowed = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert allowed == [
        {"app.kubernetes.io/component": "gateway"},
        {"app.kubernetes.io/component": "app"},
    ]


def test_dev_runs_a_durable_redis_in_the_cluster():
    redis = container(objects("dev", "StatefulSet")["redis"])
    flags = dict(zip(redis["args"][::2], redis["args"][1::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert config("dev")["REDIS_URL"] == "redis://redis:6379/0"
    # The services' user-data budgets are shares of what this Redis may hold.
    assert config("dev")["REDIS_MAXMEMORY"] == flags["--maxmemory"]


def test_prod_speaks_to_a_managed_redis():
    assert "StatefulSet" not in {obj["kind"] for obj in rendered("prod")}
    assert config("prod")["REDIS_URL"].startswith(("redis://", "rediss://"))
    assert redis_bytes(config("prod")["REDIS_MAXMEMORY"]) > 0  # the budgets' base, stated
    gateway = objects("prod", "Service")["gateway"]["spec"]
    # The callers' own addresses reach the gateway (anonymous limits key on them).
    assert (gateway["type"], gateway["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
