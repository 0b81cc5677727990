"""Starts child processes, waits until each is ready, notices deaths, and stops them all.

Each child runs in its own process group so stopping it also stops anything it spawned
(uvicorn workers, for instance), and a terminal's Ctrl-C reaches only this supervisor,
which then stops the children. On Linux each child also gets SIGTERM if the supervisor dies
without cleaning up (even by SIGKILL), so no stack outlives its runner.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None


class Supervisor:
    def __init__(self, log_dir: Path | None = None) -> None:
        """With `log_dir`, each child's output goes to `<log_dir>/<name>.log`; else inherited."""
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log" if self.log_dir else None
        output: IO[bytes] | None = open(log_path, "wb") if log_path else None
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output:
                output.close()  # the child holds its own descriptor
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise ChildFailed(
                    f"{child.name} exited with {child.process.returncode}{self._tail(child)}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ChildFailed(f"{child.name} was not ready within {timeout_s:.0f}s{self._tail(child)}")

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self, child: Child, grace_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after `grace_s` (0: at once, as a crash would)."""
        if child.process.poll() is None:
            self._signal(child, signal.SIGTERM if grace_s else signal.SIGKILL)
            try:
                child.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.process.wait()

    def stop_all(self, grace_s: float = 5) -> None:
        """All at once: SIGTERM to every child, then SIGKILL to any still there at the end."""
        running = [c for c in self.children if c.process.poll() is None]
        for child in running:
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in running:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.process.wait()
        self.children.clear()

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        try:
            os.killpg(child.process.pid, sig)
        except ProcessLookupError:
            pass  # already gone

    @staticmethod
    def _tail(child: Child, lines: int = 15) -> str:
        if not child.log_path or not child.log_path.exists():
            return ""
        text = child.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(child.log_path) + " ---\n" + "\n".join(text)
