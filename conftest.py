# One fixture module serves every test in the repository: real Redis, in-process app
# clients, and the whole stack for end-to-end tests.
#
# Conftest modules (this one, each directory's, and that plugin) hold fixtures and hooks only.
# Plain helpers live in helper modules: a helper used by one service's tests in its
# tests/helpers.py (`from .helpers import ...`), one shared across directories in the
# top-level tests/helpers.py (`from tests.helpers import ...`). No test imports a conftest.
pytest_plugins = ["avatar_devstack.testing"]
