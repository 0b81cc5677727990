"""A cap on calls in flight from this replica to a GPU upstream (the LLM, the speech server),
so a burst queues briefly instead of piling onto the GPU; a call that cannot start within
`wait_s` gets the service's own 503 (`busy`, with Retry-After).

Waiting calls are served fairly across callers, not first come: each caller has a queue of
its own (first come within it), and a freed place goes to the next caller in turn
(round-robin), so one caller's tenth call never goes before another caller's first. A call
that names no caller waits in one shared queue, first come.

A background call (work no user waits for, such as a summary made ahead) waits behind all
of them: a freed place goes to it only when no other call waits. It still holds one of the
places while it runs, so the cap is never exceeded; and background calls hold at most
`background_max` places at once (default: all but one, so a user's call always finds one
free or soon freed by another user's; with a single place, background work may take it when
it is free, else it could never run)."""

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avatar_shared.errors import AppError


class Gate:
    def __init__(
        self,
        max_in_flight: int,
        wait_s: float,
        busy: type[AppError],
        background_max: int | None = None,
    ) -> None:
        self.free = max_in_flight
        self.background_max = (
            max(1, max_in_flight - 1) if background_max is None else background_max
        )
        self._background_running = 0
        self.wait_s = wait_s
        self.busy = busy
        # Callers with calls waiting, in turn order (a dict keeps insertion order): each
        # caller's waiting calls, first come first.
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._background: deque[asyncio.Future[None]] = deque()  # first come first

    @asynccontextmanager
    async def slot(self, caller: str = "", background: bool = False) -> AsyncIterator[None]:
        """One call's place, held for the block. A free place is taken at once (no timer
        and no queue: only a wait needs them; a place is free only when no call waits but
        background calls past `background_max`). `background`: the call waits behind every
        other waiting call, and while `background_max` background calls run."""
        if self.free > 0 and (not background or self._background_running < self.background_max):
            self.free -= 1
            self._background_running += background
        else:
            await self._wait(caller, background)  # a background call handed one is counted
        try:
            yield
        finally:
            self._background_running -= background
            self._release()

    async def _wait(self, caller: str, background: bool) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if background:
            self._background.append(turn)
        else:
            self._waiting.setdefault(caller, deque()).append(turn)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except BaseException as exc:  # timed out, or the caller went away
            if turn.done() and not turn.cancelled():
                self._background_running -= background
                self._release()  # handed a place at the same moment: pass it on
            elif background:
                if turn in self._background:
                    self._background.remove(turn)
            else:
                self._leave(caller, turn)
            if isinstance(exc, TimeoutError):
                raise self.busy(headers={"Retry-After": "1"}) from exc
            raise

    def _leave(self, caller: str, turn: asyncio.Future[None]) -> None:
        queue = self._waiting.get(caller)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._waiting[caller]

    def _release(self) -> None:
        """A place is free: it goes to the first waiting call of the caller whose turn it
        is, and that caller goes to the back of the line; with none waiting, to the first
        background call, unless `background_max` of them run."""
        while self._waiting:
            caller = next(iter(self._waiting))
            queue = self._waiting.pop(caller)
            turn = queue.popleft()
            if queue:
                self._waiting[caller] = queue  # back of the line
            if not turn.done():
                turn.set_result(None)
                return
        while self._background and self._background_running < self.background_max:
            turn = self._background.popleft()
            if not turn.done():
                self._background_running += 1
                turn.set_result(None)
                return
        self.free += 1
