# The abuse suite's stack: the production defaults of every per-caller, per-address and
# global budget (the shared `stack` raises some for a suite that is one busy client), the
# emulators for the upstreams. Each test speaks from client addresses of its own
# (tests.helpers.client_from with 127.x.y.z), so one test's spent allowances do not reach
# another's.
from collections.abc import Iterator

import pytest

from avatar_devstack.stack import Stack
from tests.helpers import own_stack


@pytest.fixture(scope="session")
def abuse_stack() -> Iterator[Stack]:
    with own_stack("abuse", {"MAX_REQUEST_BODY_BYTES": str(2 * 1024 * 1024)}) as stack:
        yield stack
