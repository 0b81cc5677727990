"""The images (deploy/*Dockerfile): lint-clean (hadolint), running as a user of their own with
a health check, built from a context that leaves keys and user data out; and the gateway
image's entry point, run here with the real Traefik."""

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from docker.utils.build import exclude_paths

from avatar_devstack.ports import free_port
from avatar_devstack.stack import find_binary, render_static_config
from avatar_devstack.supervisor import Supervisor
from avatar_shared.registry import APPS
from tests.deploy.expected import DEPLOY_DIR, dockerfiles
from tests.deploy.gateway import (
    RENDER,
    Gateway,
    compose_gateway_environment,
    entry_point_env,
    kubernetes_gateway_environment,
    providers_of,
    start_entry_point,
)

REPO_ROOT = DEPLOY_DIR.parent


def final_stage(dockerfile: Path) -> str:
    return dockerfile.read_text().rsplit("\nFROM ", 1)[-1]


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_finds_nothing(dockerfile):
    linted = subprocess.run(
        [find_binary("hadolint"), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_each_image_runs_as_a_numeric_non_root_user_and_checks_its_health(dockerfile):
    stage = final_stage(dockerfile)
    users = [line.split()[1] for line in stage.splitlines() if line.startswith("USER ")]
    assert users, "runs as root"
    uid = users[-1].split(":")[0]
    # Numeric: Kubernetes' runAsNonRoot can only verify a number.
    assert uid.isdigit() and int(uid) != 0
    assert "\nHEALTHCHECK " in stage


def test_the_app_image_trusts_forwarded_headers_only_as_configured():
    dockerfile = (DEPLOY_DIR / "Dockerfile").read_text()
    assert "--proxy-headers" in dockerfile
    assert "FORWARDED_ALLOW_IPS=127.0.0.1" in dockerfile  # compose and k8s set the network


def build_context(root: Path) -> set[str]:
    """The files `docker build` sends from `root`, by the repository's .dockerignore."""
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return {path for path in exclude_paths(str(root), patterns) if (root / path).is_file()}


def test_the_build_context_leaves_out_keys_user_data_and_history(tmp_path):
    files = {
        ".env": "OPENAI_KEY=sk-...",
        "var/redis/appendonlydir/appendonly.aof.1.incr.aof": "",
        "var/user_assets/ip:1/audio/a.mp3": "",
        "var/run/auth-signing-keys.json": "{}",
        "deploy/secrets/anon_id_secret": "k",
        ".git/config": "",
        "services/chat/.env": "",
        "services/chat/tests/test_x.py": "",
        "services/chat/src/avatar_chat/app.py": "",
        "tools/oidc-provider/node_modules/x/index.js": "",
        "tools/oidc-provider/server.mjs": "",
        "tools/devstack/src/avatar_devstack/secrets.py": "",
        "pyproject.toml": "",
        "uv.lock": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert build_context(tmp_path) == {
        "services/chat/src/avatar_chat/app.py",
        "tools/oidc-provider/server.mjs",
        "pyproject.toml",
        "uv.lock",
    }


def test_the_build_context_holds_what_every_image_copies():
    sent = build_context(REPO_ROOT)
    for spec in APPS:
        assert f"{spec.folder}/pyproject.toml" in sent
    assert {"pyproject.toml", "uv.lock", "shared/pyproject.toml"} <= sent
    assert {"gateway/traefik/traefik.yml", "gateway/traefik/render.sh"} <= sent
    assert "tools/oidc-provider/package-lock.json" in sent
    assert not any(path.startswith(("var/", ".git/", "deploy/secrets/")) for path in sent)


def ping_answers(gateway: Gateway) -> bool:
    try:
        answer = httpx.get(f"{gateway.metrics_url}/ping", timeout=1.0, trust_env=False)
    except httpx.TransportError:
        return False
    return (answer.status_code, answer.text) == (200, "OK")


@pytest.mark.stack  # starts Traefik: left out of make test-unit
@pytest.mark.parametrize(
    "environment",
    [compose_gateway_environment, kubernetes_gateway_environment],
    ids=["compose", "kubernetes"],
)
def test_the_gateway_image_entry_point_starts_traefik_with_the_environment_s_providers(
    environment, tmp_path
):
    """Outside Docker and a cluster their providers find nothing, but Traefik reads the
    rendered static file (an unknown key or a leftover placeholder would stop it) and
    answers /ping on the internal entry point, which the images' health checks call."""
    providers = providers_of(environment())
    # The Docker API and the cluster are not here: their endpoints are closed ports.
    if "docker" in providers:
        providers["docker"]["endpoint"] = f"tcp://127.0.0.1:{free_port()}"
    if "kubernetesCRD" in providers:
        providers["kubernetesCRD"]["endpoint"] = f"http://127.0.0.1:{free_port()}"
    gateway = entry_point_env(providers, tmp_path, {})
    supervisor = Supervisor(tmp_path)
    try:
        supervisor.wait_ready(start_entry_point(supervisor, gateway), lambda: ping_answers(gateway))
        rendered = tmp_path / "traefik.yml"
        assert "${" not in rendered.read_text()
        healthcheck = subprocess.run(
            [find_binary("traefik"), "healthcheck", f"--configFile={rendered}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr
    finally:
        supervisor.stop_all()


@pytest.mark.stack  # starts Traefik: left out of make test-unit
@pytest.mark.parametrize(
    "proxies", ["::ffff:10.0.0.0/104 10.1.0.0/16", "10.0.0.0/8, 2001:db8::/32,", " "]
)
def test_the_gateway_starts_with_any_list_of_trusted_proxies(proxies, tmp_path):
    """Spaces or commas between them, and a range starting with "::", which YAML would not
    read bare: each goes in quoted, and Traefik starts."""
    gateway = entry_point_env(providers_of(compose_gateway_environment()), tmp_path, {})
    gateway.env["GATEWAY_TRUSTED_PROXIES"] = proxies
    supervisor = Supervisor(tmp_path)
    try:
        supervisor.wait_ready(start_entry_point(supervisor, gateway), lambda: ping_answers(gateway))
    finally:
        supervisor.stop_all()
    # The dev runner (`make run`) renders the same list the same way.
    (tmp_path / "dev").mkdir()
    dev = yaml.safe_load(render_static_config(gateway.env, tmp_path / "dev").read_text())
    image = yaml.safe_load((tmp_path / "traefik.yml").read_text())
    trusted = image["entryPoints"]["web"]["forwardedHeaders"]["trustedIPs"]
    assert trusted == dev["entryPoints"]["web"]["forwardedHeaders"]["trustedIPs"]
    assert trusted[2:] == [item for item in proxies.replace(",", " ").split() if item]


def refusal_of_entry_point(tmp_path: Path, **env: str | None) -> str:
    """What the image's entry point says as it refuses to start with `env` (None: unset)."""
    gateway = entry_point_env(providers_of(compose_gateway_environment()), tmp_path, {})
    for name, value in env.items():
        if value is None:
            del gateway.env[name]
        else:
            gateway.env[name] = value
    result = subprocess.run(
        ["sh", str(RENDER)], env=gateway.env, capture_output=True, text=True, timeout=10,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    return result.stderr


def test_the_gateway_entry_point_refuses_trusted_proxies_that_are_no_addresses(tmp_path):
    said = refusal_of_entry_point(tmp_path, GATEWAY_TRUSTED_PROXIES='10.0.0.1"], evil: ["x')
    assert "GATEWAY_TRUSTED_PROXIES holds something not an address or range" in said


def test_the_gateway_entry_point_names_a_missing_setting(tmp_path):
    assert "GATEWAY_PROVIDERS is not set" in refusal_of_entry_point(
        tmp_path, GATEWAY_PROVIDERS=None
    )


def test_the_images_run_the_python_the_project_pins():
    pinned = (REPO_ROOT / ".python-version").read_text().strip()
    assert f"PYTHON_IMAGE=python:{pinned}-slim" in (DEPLOY_DIR / "Dockerfile").read_text()
