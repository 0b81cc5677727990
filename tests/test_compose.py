"""deploy/compose.yml is valid Compose (checked against the Compose Specification's schema,
as `docker compose config` would, since no Docker engine runs here) and wires every app of
the registry."""

import json

import jsonschema
import pytest
import yaml

from avatar_devstack.environment import REPO_ROOT
from avatar_shared.registry import APPS, SERVICES

SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "deploy" / "compose.yml").read_text())


def test_compose_file_follows_the_spec(compose):
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(compose)


@pytest.mark.parametrize("spec", APPS, ids=lambda spec: spec.name)
def test_every_app_is_built_from_its_own_package(compose, spec):
    args = compose["services"][spec.name]["build"]["args"]
    assert (args["APP"], args["PACKAGE"]) == (spec.factory, spec.project)
    pyproject = (REPO_ROOT / spec.folder / "pyproject.toml").read_text()
    assert f'name = "{spec.project}"' in pyproject


def test_the_gateway_balances_every_app_and_apps_find_every_service(compose):
    gateway_env = compose["services"]["gateway"]["environment"]
    assert {f"{spec.name.upper()}_URLS" for spec in APPS} <= set(gateway_env)
    app_env = compose["services"]["chat"]["environment"]
    assert {f"{spec.name.upper()}_URL" for spec in SERVICES} <= set(app_env)
