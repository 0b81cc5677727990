"""A child's output written to a file stays bounded (the dev runner's stacks in tests and
benchmarks): past the cap the file is cut, its earlier part kept beside it, and the child
goes on writing at the start of the emptied file."""

import sys
import time
from pathlib import Path

from avatar_devstack.supervisor import Supervisor

CAP = 64 * 1024
# Floods its log with 200 KB, waits until the log has been cut (its earlier part appears
# beside it), then writes one more line.
FLOOD = """
import os, sys, time
sys.stdout.write(("x" * 99 + "\\n") * 2000)
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("after the cut", flush=True)
time.sleep(60)
"""


def wait_for(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.05)


def test_a_flooded_log_is_cut_and_the_child_writes_on_at_its_start(tmp_path: Path):
    supervisor = Supervisor(tmp_path, max_log_bytes=CAP)
    log, earlier = tmp_path / "flood.log", tmp_path / "flood.log.1"
    supervisor.start("flood", [sys.executable, "-c", FLOOD, str(earlier)], {})
    try:
        wait_for(lambda: log.exists() and b"after the cut" in log.read_bytes())
        # What the child wrote before the cut is beside it; the log itself holds what came
        # after, from its first byte (no hole where the old content was).
        assert earlier.read_bytes() == ("x" * 99 + "\n").encode() * 2000
        assert log.read_bytes() == b"after the cut\n"
    finally:
        supervisor.stop_all(grace_s=0)


def test_a_log_under_the_cap_is_left_alone(tmp_path: Path):
    supervisor = Supervisor(tmp_path, max_log_bytes=CAP)
    supervisor.start("quiet", [sys.executable, "-c", "print('hello', flush=True)"], {})
    try:
        wait_for(lambda: (tmp_path / "quiet.log").read_bytes() == b"hello\n")
        supervisor.cap_logs()
        assert (tmp_path / "quiet.log").read_bytes() == b"hello\n"
        assert not (tmp_path / "quiet.log.1").exists()
    finally:
        supervisor.stop_all(grace_s=0)
