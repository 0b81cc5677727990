"""A cap on LLM calls in flight from this replica, so a burst queues briefly instead of
piling onto the GPU; a call that cannot start within LLM_QUEUE_WAIT_S gets 503 llm_busy."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avatar_chat.errors import LlmBusy


class LlmGate:
    def __init__(self, max_in_flight: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self.wait_s = wait_s

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One LLM call's place, held for the block."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError as exc:
            raise LlmBusy(headers={"Retry-After": "1"}) from exc
        try:
            yield
        finally:
            self._slots.release()
