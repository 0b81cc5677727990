"""A value recomputed when it has expired; concurrent callers wait for one computation
instead of each starting their own."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    def __init__(self, compute: Callable[[], Awaitable[tuple[T, float]]]) -> None:
        """`compute` returns the value and how many seconds it stays valid."""
        self._compute = compute
        self._lock = asyncio.Lock()
        self._expires = 0.0
        self._value: T | None = None

    async def get(self) -> T:
        async with self._lock:
            if self._value is None or time.monotonic() >= self._expires:
                self._value, ttl_s = await self._compute()
                self._expires = time.monotonic() + ttl_s
            return self._value
