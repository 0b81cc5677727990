"""A cap on calls in flight from this replica to a GPU upstream (the LLM, the speech server),
so a burst queues briefly instead of piling onto the GPU; a call that cannot start within
`wait_s` gets the service's own 503 (`busy`, with Retry-After)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avatar_shared.errors import AppError


class Gate:
    def __init__(self, max_in_flight: int, wait_s: float, busy: type[AppError]) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self.wait_s = wait_s
        self.busy = busy

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One call's place, held for the block. A free place is taken at once: only a wait
        needs a timer (`wait_for` would start a task for every call)."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.wait_s):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise self.busy(headers={"Retry-After": "1"}) from exc
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()
