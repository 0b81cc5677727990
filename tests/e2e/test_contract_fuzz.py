"""The API does exactly what its OpenAPI document says: schemathesis generates requests from
the merged `/api/openapi.json` (valid and invalid ones, boundary values, and stateful
sequences that use what one call returns in the next) and sends them through the gateway to
the demo stack, with every check on (no 5xx of ours, documented statuses, content types and
headers, response schemas, valid data accepted, invalid data refused, `Allow` on 405, ...).

`make test` runs a light pass with a fixed seed; `make test-fuzz` a long one
(CONTRACT_FUZZ_EXAMPLES per operation and phase, at least CONTRACT_FUZZ_MIN_CASES cases).
What JSON Schema cannot say is supplied by tests/schemathesis_hooks.py.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from avatar_devstack.environment import REPO_ROOT
from avatar_devstack.stack import Stack
from tests.helpers import own_stack

EXAMPLES = int(os.environ.get("CONTRACT_FUZZ_EXAMPLES", "5"))
MIN_CASES = int(os.environ.get("CONTRACT_FUZZ_MIN_CASES", "200"))
SEED = os.environ.get("CONTRACT_FUZZ_SEED", "20261124")


@pytest.fixture(scope="module")
def demo() -> Iterator[Stack]:
    """The demo stack on its own (the fuzzer makes many characters, sessions and 3D jobs)."""
    with own_stack("fuzz", {}) as stack:
        yield stack


def test_the_api_does_what_its_openapi_document_says(demo):
    url = demo.gateway_url
    argv = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json",
        "--url", url, "--checks", "all", "--max-examples", str(EXAMPLES),
        "--seed", SEED, "--workers", "1", "--no-color",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}
    run = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    report = run.stdout + run.stderr
    cases = re.search(r"(\d+) generated", report)
    print(report[report.find("SUMMARY") :])  # shown by `make test-fuzz` (-s)
    assert run.returncode == 0, report
    assert cases and int(cases.group(1)) >= MIN_CASES, report
