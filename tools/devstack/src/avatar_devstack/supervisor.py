"""Starts child processes, waits until each is ready, notices deaths, and stops them all.

Each child runs in its own process group so stopping it also stops anything it spawned
(uvicorn workers, for instance), and a terminal's Ctrl-C reaches only this supervisor,
which then stops the children. On Linux each child also gets SIGTERM if the supervisor dies
without cleaning up (even by SIGKILL), so no stack outlives its runner.

A child's output written to a file is bounded: past `max_log_bytes` the file is cut (see
`cap_logs`), so a child that floods its log (Traefik when out of file descriptors logs every
failed accept) cannot fill the disk.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
LOG_CHECK_S = 1.0  # how often the log files' sizes are checked


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
    def __init__(self, log_dir: Path | None = None, max_log_bytes: int | None = None) -> None:
        """With `log_dir`, each child's output goes to `<log_dir>/<name>.log`; else inherited.
        With `max_log_bytes` too, each such file is cut past that size (`cap_logs`), checked
        every LOG_CHECK_S by a thread of the supervisor's."""
        self.log_dir = log_dir
        self.max_log_bytes = max_log_bytes
        self.children: list[Child] = []
        self._done_keeping = threading.Event()
        self._keeper: threading.Thread | None = None

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log" if self.log_dir else None
        # Append mode: after a cut (`cap_logs`) the child writes at the file's new end, not at
        # its old offset past it.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        output = os.open(log_path, flags, 0o644) if log_path else None
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output is not None:
                os.close(output)  # the child holds its own descriptor
        child = Child(name, process, log_path)
        self.children.append(child)
        if log_path and self.max_log_bytes and not (self._keeper and self._keeper.is_alive()):
            self._done_keeping = threading.Event()
            self._keeper = threading.Thread(target=self._keep_logs, name="logs", daemon=True)
            self._keeper.start()
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise ChildFailed(
                    f"{child.name} exited with {child.process.returncode}{self.tail(child)}"
                )
            if ready():
                return
            time.sleep(0.1)
        raise ChildFailed(f"{child.name} was not ready within {timeout_s:.0f}s{self.tail(child)}")

    def cap_logs(self) -> None:
        """Each child's log file past `max_log_bytes` is cut: what it holds becomes
        `<name>.log.1` (the one before is dropped) and it starts again empty. A line the
        child writes between the copy and the cut is lost."""
        if not self.max_log_bytes:
            return
        for child in list(self.children):  # the list changes under other threads
            path = child.log_path
            try:
                if path is None or path.stat().st_size <= self.max_log_bytes:
                    continue
                shutil.copyfile(path, path.with_name(f"{path.name}.1"))
                os.truncate(path, 0)
            except FileNotFoundError:
                continue  # its folder is being removed: the stack is gone

    def _keep_logs(self) -> None:
        while not self._done_keeping.wait(LOG_CHECK_S):
            self.cap_logs()

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
        self._done_keeping.set()

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        try:
            os.killpg(child.process.pid, sig)
        except ProcessLookupError:
            pass  # already gone

    @staticmethod
    def tail(child: Child, lines: int = 15) -> str:
        """The last lines of the child's log, to print with what went wrong with it."""
        if not child.log_path or not child.log_path.exists():
            return ""
        text = child.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(child.log_path) + " ---\n" + "\n".join(text)
