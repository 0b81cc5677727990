"""The gateway's routes (make run's routers.yml and services.yml, compose's labels, the
Kubernetes IngressRoute) are what `make routes` renders from the registry of apps: a hand
edit of any of them, or a registry change without `make routes`, fails here. (In compose.yml
only the `x-routes` section is generated; that each app's service takes its labels from it is
tests/deploy/test_compose.py's check.)"""

import pytest

from avatar_devstack.routes import (
    COMPOSE_FILE,
    COMPOSE_START,
    HEADER,
    RENDERERS,
    compose_yml,
    rendered,
    rule,
)


@pytest.mark.parametrize("path", RENDERERS, ids=lambda path: path.name)
def test_generated_route_file_is_up_to_date(path):
    assert path.read_text() == rendered(path), f"{path} is stale: run `make routes`"


@pytest.mark.parametrize("path", RENDERERS, ids=lambda path: path.name)
def test_generated_route_file_says_so_and_by_which_command(path):
    assert "`make routes`" in HEADER and HEADER in path.read_text().splitlines()


def test_compose_is_rendered_only_between_its_markers():
    current = COMPOSE_FILE.read_text()
    hand_edited = current.replace(f"{COMPOSE_START}\n", f"{COMPOSE_START}\n  edited: true\n")
    outside = current.replace("name: avatar-forge\n", "name: avatar-forge  # edited\n")
    assert compose_yml(hand_edited) == current
    assert compose_yml(outside) == outside


def test_a_prefix_routes_its_path_and_below_or_with_a_slash_only_below():
    assert rule(("/api/chat",)) == "Path(`/api/chat`) || PathPrefix(`/api/chat/`)"
    assert rule(("/api/auth/",)) == "PathPrefix(`/api/auth/`)"
    assert rule(("/a", "/b/")) == "Path(`/a`) || PathPrefix(`/a/`) || PathPrefix(`/b/`)"
