"""A data file parsed once and re-parsed only when its mtime changes (presets, voices).

A broken new version never replaces the last good one: the error is logged and the old
value keeps being served. At start-up, with no good version at all, construction fails, so
a service never runs without its data.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
logger = logging.getLogger("avatar.reloading_file")


class ReloadingFile(Generic[T]):
    def __init__(self, path: Path, parse: Callable[[Path], T]) -> None:
        """`parse` reads the file and raises on anything invalid."""
        self.path = path
        self._parse = parse
        self._mtime_ns = path.stat().st_mtime_ns if path.exists() else 0
        self._value = parse(path)

    def get(self) -> T:
        """One stat per call; the file is read only after it changed."""
        try:
            mtime_ns = self.path.stat().st_mtime_ns
        except OSError:
            return self._value  # a file being replaced: keep serving what we have
        if mtime_ns != self._mtime_ns:
            self._mtime_ns = mtime_ns  # a broken version is not re-read on every call
            try:
                self._value = self._parse(self.path)
                logger.info("reloaded %s", self.path)
            except Exception:  # any failure keeps the last good copy; the cause is logged
                logger.exception("%s is broken; serving the last good copy", self.path)
        return self._value
