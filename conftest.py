# One fixture module serves every test in the repository: real Redis, in-process app
# clients, and the whole stack for end-to-end tests.
#
# Conftest modules (this one, each directory's, and that plugin) hold fixtures and hooks only.
# Plain helpers live in helper modules: a helper used by one service's tests in its
# tests/helpers.py (`from .helpers import ...`), one shared across directories in the
# top-level tests/helpers.py (`from tests.helpers import ...`). No test imports a conftest.
from pathlib import Path

import pytest

pytest_plugins = ["avatar_devstack.testing"]

E2E = Path(__file__).parent / "tests" / "e2e"
ABUSE = Path(__file__).parent / "tests" / "abuse"  # `make test-abuse`: a hostile client's attacks
# The fixtures that start the whole stack (`gateway` asks for `stack`) or a browser.
STACK_FIXTURES = {"stack", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `stack` what needs more than one service and a Redis: every end-to-end test
    (tests/e2e: the stack, a stack of its own, the dev runner, Traefik, a browser) and any test
    using the stack or browser fixtures. `make test-unit` runs the rest (`-m "not stack"`);
    a test elsewhere that starts Traefik or the like carries `@pytest.mark.stack` itself
    (tests/deploy/test_images.py)."""
    for item in items:
        end_to_end = item.path.is_relative_to(E2E) or item.path.is_relative_to(ABUSE)
        if end_to_end or STACK_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.stack)
