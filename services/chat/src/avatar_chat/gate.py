"""A cap on LLM calls in flight from this replica, so a burst queues briefly instead of
piling onto the GPU; a call that cannot start within LLM_QUEUE_WAIT_S gets 503 llm_busy."""

import asyncio

from avatar_shared.errors import ServiceUnavailable


class LlmBusy(ServiceUnavailable):
    code, message = "llm_busy", "The language model is busy; try again in a moment."


class LlmGate:
    def __init__(self, max_in_flight: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self.wait_s = wait_s

    async def enter(self) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError as exc:
            raise LlmBusy(headers={"Retry-After": "1"}) from exc

    def leave(self) -> None:
        self._slots.release()
