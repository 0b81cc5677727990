"""Values computed on demand and reused until they expire.

- `TtlCache`: one value (the model list, the merged OpenAPI document); concurrent callers
  share one computation, its value or its failure, instead of each starting their own.
- `KeyedTtlCache`: a value per key (a character, a model's context window), at most
  `max_entries` of them, least recently used dropped first, so keys a client makes up cannot
  grow it without bound.

`compute` returns the value and how many seconds it stays valid (0: not reused; a failure
raises and caches nothing). A `KeyedTtlCache` entry can also be dropped before it expires
(`forget`, `clear`: the source said it changed).
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

Compute = Callable[[], Awaitable[tuple[T, float]]]


class TtlCache(Generic[T]):
    def __init__(self, compute: Compute[T]) -> None:
        self._compute = compute
        self._expires = float("-inf")
        self._value: T
        self._computing: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if time.monotonic() < self._expires:
            return self._value
        if self._computing is None:
            self._computing = asyncio.create_task(self._refresh())
            # A failure no caller is left to await must not be reported as unretrieved.
            self._computing.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: a caller that gives up does not cancel the others' computation.
        return await asyncio.shield(self._computing)

    async def _refresh(self) -> T:
        try:
            value, ttl_s = await self._compute()
            self._value, self._expires = value, time.monotonic() + ttl_s
            return value
        finally:
            self._computing = None


class KeyedTtlCache(Generic[K, T]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[T, float]] = OrderedDict()
        self._forgotten = 0  # counts `forget` and `clear` calls

    async def get(self, key: K, compute: Compute[T]) -> T:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() < entry[1]:
            self._entries.move_to_end(key)
            return entry[0]
        forgotten = self._forgotten
        value, ttl_s = await compute()
        if forgotten != self._forgotten:
            # Something changed while this was read: it may be the value from before the
            # change, so it is returned but not kept.
            return value
        self._entries[key] = (value, time.monotonic() + ttl_s)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def forget(self, key: K) -> None:
        """Drops `key`'s value: the next `get` computes it again."""
        self._forgotten += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._forgotten += 1
        self._entries.clear()
