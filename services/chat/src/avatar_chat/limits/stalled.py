"""A streamed reply to a client that stopped reading must not hold its LLM slot and lease
for as long as it pleases: each send to the client must be taken within
STREAM_WRITE_TIMEOUT_S. (A send blocks only once the client's socket and the server's
buffers are full: a client that reads, however slowly, is never cut off.) Past it, the
stream is ended: its events' generator is closed, which closes the upstream request and gives
back the slot, the lease and a new session's place, and the connection is closed.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Message, Send

log = logging.getLogger(__name__)


class WriteTimedStream(StreamingResponse):
    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        write_timeout_s: float,
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(events, media_type=media_type, headers=headers)
        self.events = events
        self.write_timeout_s = write_timeout_s

    async def stream_response(self, send: Send) -> None:
        """The stream, each send watched: a timer every half timeout looks at the send in
        progress, and one that began too long ago ends the stream (a timer per send would
        cost 5 us on every event; this costs a clock read)."""
        loop = asyncio.get_running_loop()
        limit_s = self.write_timeout_s
        sending_since: float | None = None  # when the send in progress began
        deadline = asyncio.timeout(None)
        watcher: asyncio.TimerHandle

        async def watched(message: Message) -> None:
            nonlocal sending_since
            sending_since = loop.time()
            await send(message)
            sending_since = None
            if deadline.when() is not None:  # the watch saw this one waiting
                deadline.reschedule(None)

        def watch() -> None:
            nonlocal watcher
            if sending_since is not None:
                deadline.reschedule(sending_since + limit_s)
            watcher = loop.call_later(limit_s / 2, watch)

        watcher = loop.call_later(limit_s / 2, watch)
        try:
            async with deadline:
                try:
                    await super().stream_response(watched)
                finally:
                    watcher.cancel()
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("streamed reply ended: its client took nothing for %s s", limit_s)
            # Returning with the response unfinished makes the server close the connection.
        finally:
            # However the stream ended (a client gone mid-send included, when the events
            # stopped at a yield), they are closed now, not whenever the garbage collector
            # gets to them: that releases what the turn holds and records what was sent.
            with anyio.CancelScope(shield=True):
                await self.events.aclose()
