"""A Redis lock as an async context manager, shared by every replica of a service.

The lock expires by itself after `expire_s`, so a holder that dies never blocks the others
for longer; release is atomic (redis-py's Lua compare-and-delete), so a holder whose lock
expired cannot release someone else's.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import LockError

POLL_S = 0.05  # how often a waiter tries again


class LockTimeout(TimeoutError):
    """The lock was not had within the wait."""


@asynccontextmanager
async def redis_lock(
    redis: Redis, name: str, *, expire_s: float, wait_s: float
) -> AsyncIterator[None]:
    """Held for the `async with` block. `wait_s=0`: one try, no waiting."""
    lock = redis.lock(name, timeout=expire_s, sleep=POLL_S, blocking_timeout=wait_s or None)
    if not await lock.acquire(blocking=wait_s > 0):
        raise LockTimeout(f"{name} is held by another request")
    try:
        yield
    finally:
        try:
            await lock.release()
        except LockError:
            pass  # it expired meanwhile: there is nothing of ours left to release
