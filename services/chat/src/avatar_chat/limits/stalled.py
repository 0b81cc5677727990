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
        async def timed(message: Message) -> None:
            async with asyncio.timeout(self.write_timeout_s):
                await send(message)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            log.warning(
                "streamed reply ended: its client took nothing for %s s", self.write_timeout_s
            )
            # The events stopped at a yield: closing them releases what the turn holds.
            # Returning with the response unfinished makes the server close the connection.
            await self.events.aclose()
