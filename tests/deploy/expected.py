"""What every deployment (make run, compose, Kubernetes) must say, read from the one sources:
the gateway's rules (gateway/traefik/dynamic/rules.yml), the registry of apps, their settings
classes and the routes rendered from the registry (avatar_devstack.routes)."""

import re
from pathlib import Path

import yaml

from avatar_chat.settings import ChatSettings
from avatar_devstack.deploy_secrets import MAKERS
from avatar_devstack.environment import GATEWAY_CONFIG_DIR, REPO_ROOT
from avatar_devstack.routes import transport
from avatar_shared.registry import AppSpec, app_spec, load

DEPLOY_DIR = REPO_ROOT / "deploy"
DYNAMIC_DIR = GATEWAY_CONFIG_DIR / "dynamic"

NATIVE_ROUTERS: dict[str, dict] = yaml.safe_load((DYNAMIC_DIR / "routers.yml").read_text())["http"][
    "routers"
]


def _section_names(template: str, section: str) -> set[str]:
    """The names declared in one `http:` section of a Go-template file (not plain YAML)."""
    (body,) = re.findall(rf"^  {section}:\n(.*?)(?=^  \w|\Z)", template, re.S | re.M)
    return set(re.findall(r"^    ([\w-]+):$", body, re.M))


_RULES = (DYNAMIC_DIR / "rules.yml").read_text()
RULE_MIDDLEWARES = _section_names(_RULES, "middlewares")
RULE_TRANSPORTS = _section_names(_RULES, "serversTransports")
RULE_SERVICES = _section_names(_RULES, "services")  # the edge's, and each service's failover


def transport_of(app: str) -> str:
    """The app's serversTransport, as the routes' renderer picks it from the registry."""
    return transport(app_spec(app))


def keys_read_by(spec: AppSpec) -> set[str]:
    """The key files (deploy/secrets, the Kubernetes Secret) an app needs: one per secret
    setting of its settings class, and auth's signing keys."""
    fields = set(load(spec.settings_class).model_fields)
    keys = {name for name in MAKERS if name in fields}
    if "signing_keys_file" in fields:
        keys.add("auth_signing_keys")
    return keys


# No environment of any container may carry one of these: they are files under /run/secrets.
SECRET_VARIABLES = {name.upper() for name in MAKERS}


def without_provider(name: str) -> str:
    """`cors@file` -> `cors`: a rule's name as the native routers spell it."""
    return name.removesuffix("@file")


def compose_default(value: str) -> str:
    """A compose value with its `${NAME:-default}`s at their defaults (nothing set)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def dockerfiles() -> list[Path]:
    return sorted(DEPLOY_DIR.rglob("*Dockerfile"))


def _rule_default(variable: str) -> int:
    """A setting's default in rules.yml's template (`env "NAME" | default "N"`)."""
    return int(re.search(rf'env "{variable}" \| default "(\d+)"', _RULES)[1])


# What one client address may have buffered by the gateway at once, at the defaults: each
# router with the body limit counts GATEWAY_IN_FLIGHT_PER_ADDRESS requests of its own, and
# each holds its body whole before sending it on, its first memRequestBodyBytes in memory,
# the rest in a file under /tmp, MAX_REQUEST_BODY_BYTES at most.
BUFFERED_PER_ADDRESS = _rule_default("GATEWAY_IN_FLIGHT_PER_ADDRESS") * sum(
    "body-limit" in router["middlewares"] for router in NATIVE_ROUTERS.values()
)
BUFFERED_IN_MEMORY_BYTES = int(re.search(r"memRequestBodyBytes: (\d+)", _RULES)[1])
BUFFERED_ON_DISK_BYTES = _rule_default("MAX_REQUEST_BODY_BYTES")
# The gateway's own memory beside the bodies, measured with real Traefik (a probe holding
# 500 uploads from one address, docs/operations.md#gateway-memory-and-uploads): 97 MB idle,
# and about 110 KiB per request under way (its connection, buffers, Go's garbage).
TRAEFIK_IDLE_BYTES = 100 * 1000**2
TRAEFIK_PER_REQUEST_BYTES = 110 * 1024


# The longest a chat reply may take with the defaults: it may summarize, wait for a model
# slot, be written and have its last sentence spoken (as the gateway's wait for it,
# tests/test_gateway_timeouts.py). A chat replica told to stop must be given longer.
LONGEST_CHAT_REPLY_S = sum(
    ChatSettings.model_fields[step].default
    for step in ("summary_timeout_s", "llm_queue_wait_s", "llm_total_timeout_s", "tts_timeout_s")
)
