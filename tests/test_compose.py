"""deploy/compose.yml is valid Compose (checked against the Compose Specification's schema,
as `docker compose config` would, since no Docker engine runs here) and wires every app."""

import json

import jsonschema
import pytest
import yaml

from avatar_devstack.stack import APPS, REPO_ROOT

SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "deploy" / "compose.yml").read_text())


def test_compose_file_follows_the_spec(compose):
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose)


def test_every_app_is_built_from_its_own_package(compose):
    for name, factory in APPS.items():
        args = compose["services"][name]["build"]["args"]
        assert args["APP"] == factory
        package_dir = "gateway" if name == "edge" else f"services/{name}"
        pyproject = (REPO_ROOT / package_dir / "pyproject.toml").read_text()
        assert f'name = "{args["PACKAGE"]}"' in pyproject


def test_gateway_balances_every_app(compose):
    gateway_env = compose["services"]["gateway"]["environment"]
    assert {f"{name.upper()}_URLS" for name in APPS} <= set(gateway_env)
