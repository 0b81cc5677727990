# The abuse suite's stack: the production defaults of every per-caller, per-address and
# global budget (the shared `stack` raises some for a suite that is one busy client), the
# emulators for the upstreams. Each test speaks from client addresses of its own
# (tests.helpers.client_from with 127.x.y.z), so one test's spent allowances do not reach
# another's.
from collections.abc import Iterator

import pytest

from avatar_devstack.stack import Stack
from avatar_emulators.replies import DEFAULT_MODELS, LONG_REPLY_MODEL
from tests.helpers import own_stack


@pytest.fixture(scope="session")
def abuse_stack() -> Iterator[Stack]:
    # The LLM also serves the emulators' long-reply model (for clients that stop reading).
    models = [arg for model in (*DEFAULT_MODELS, LONG_REPLY_MODEL) for arg in ("--model", model)]
    env = {"MAX_REQUEST_BODY_BYTES": str(2 * 1024 * 1024)}
    with own_stack("abuse", env, emulator_args={"ollama": models}) as stack:
        yield stack
