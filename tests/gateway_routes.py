"""The gateway's routes as `make run` defines them (gateway/traefik/dynamic/routers.yml): the
one source that the compose labels and the Kubernetes IngressRoutes are checked against."""

import yaml

from avatar_devstack.environment import GATEWAY_CONFIG_DIR

NATIVE_ROUTERS: dict[str, dict] = yaml.safe_load(
    (GATEWAY_CONFIG_DIR / "dynamic" / "routers.yml").read_text()
)["http"]["routers"]
