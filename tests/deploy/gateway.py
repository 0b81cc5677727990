"""The gateway image's entry point (gateway/traefik/render.sh) run here, with the real Traefik
from the virtualenv and this checkout's configuration where the image has /etc/traefik."""

from dataclasses import dataclass
from pathlib import Path

import yaml

from avatar_devstack.ports import free_port
from avatar_devstack.stack import find_binary
from avatar_devstack.supervisor import Child, Supervisor
from tests.deploy.expected import DEPLOY_DIR, DYNAMIC_DIR

RENDER = DYNAMIC_DIR.parent / "render.sh"


def compose_gateway_environment() -> dict[str, str]:
    compose = yaml.safe_load((DEPLOY_DIR / "compose.yml").read_text())
    return compose["services"]["gateway"]["environment"]


def kubernetes_gateway_environment() -> dict[str, str]:
    documents = yaml.safe_load_all((DEPLOY_DIR / "k8s" / "base" / "gateway.yaml").read_text())
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # Kubernetes expands $(NAME) from the pod's earlier variables.
    env["GATEWAY_PROVIDERS"] = env["GATEWAY_PROVIDERS"].replace("$(POD_NAMESPACE)", "avatar-forge")
    return env


def providers_of(environment: dict[str, str]) -> dict:
    """An environment's GATEWAY_PROVIDERS, its rules file this checkout's."""
    providers = yaml.safe_load(environment["GATEWAY_PROVIDERS"])
    providers["file"]["filename"] = str(DYNAMIC_DIR / "rules.yml")
    return providers


@dataclass
class Gateway:
    url: str
    metrics_url: str
    env: dict[str, str]


def entry_point_env(providers: dict, run_dir: Path, extra: dict[str, str]) -> Gateway:
    port, metrics = free_port(), f"127.0.0.1:{free_port()}"
    env = {
        **extra,
        "PATH": str(Path(find_binary("traefik")).parent) + ":/usr/bin:/bin",
        "GATEWAY_PROVIDERS": yaml.safe_dump(providers, default_flow_style=True, width=10_000),
        "GATEWAY_CONFIG_DIR": str(DYNAMIC_DIR.parent),
        "GATEWAY_RENDERED_CONFIG": str(run_dir / "traefik.yml"),
        "GATEWAY_PORT": str(port),
        "GATEWAY_METRICS_ADDRESS": metrics,
        "GATEWAY_LOG_LEVEL": "INFO",
        "GATEWAY_READ_TIMEOUT": "30s",  # the image's (deploy/gateway.Dockerfile)
        "GATEWAY_TRUSTED_PROXIES": "",  # the image's
    }
    return Gateway(f"http://127.0.0.1:{port}", f"http://{metrics}", env)


def start_entry_point(supervisor: Supervisor, gateway: Gateway) -> Child:
    return supervisor.start("gateway", ["sh", str(RENDER)], gateway.env)
