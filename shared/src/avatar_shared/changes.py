"""Change events between services over Redis pub/sub: "the record with this id changed".

A service that keeps records (characters) publishes a record's id on its kind's channel after
every write that changes or removes it; a service that caches those records (chat) follows the
channel and drops the id from its cache, so an edit or a delete is seen at its next read
rather than when the cached copy expires. The data itself still travels over HTTP.

Pub/sub delivers only to subscribers connected at the moment: an event sent while a follower
is away is lost. So a follower forgets everything it cached each time it (re)subscribes, and
between a lost connection and the next subscription its cache's TTL bounds how stale it is.
"""

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHARACTERS_CHANGED = "characters:changed"  # a user character was edited, deleted or moved

RETRY_S = 1.0  # pause before subscribing again after Redis went away
WAIT_S = 5.0  # a read of the channel ends this often (the loop sees `close`, health pings)


async def announce(redis: Redis, channel: str, record_id: str) -> None:
    """Publishes that `record_id` changed. The write it follows is done: a failure here only
    leaves followers to their TTL, so it is logged, not raised."""
    try:
        await redis.publish(channel, record_id)
    except RedisError as exc:
        log.warning("change of %s not announced on %s: %s", record_id, channel, exc)


class ChangeFeed:
    """Follows `channel` in a background task (`start` .. `close`): `changed(id)` for each
    event, `reset()` at each (re)subscription, when events may have been missed."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        changed: Callable[[str], None],
        reset: Callable[[], None],
    ) -> None:
        self.redis, self.channel = redis, channel
        self._changed, self._reset = changed, reset
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow_until_closed(), name=f"feed-{self.channel}")

    async def close(self) -> None:
        self._closed.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow_until_closed(self) -> None:
        while not self._closed.is_set():
            try:
                await self._follow()
            except RedisError as exc:
                log.warning("following %s failed (subscribing again): %s", self.channel, exc)
            except Exception:  # a bug: the feed must go on, or caches only expire
                log.exception("following %s failed (subscribing again)", self.channel)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), RETRY_S)

    async def _follow(self) -> None:
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            while not self._closed.is_set():
                message = await pubsub.get_message(timeout=WAIT_S)
                if message is None or message["channel"] != self.channel:
                    continue
                if message["type"] == "subscribe":
                    # The first subscription, or the client's own after a reconnection: what
                    # was published meanwhile never came.
                    self._reset()
                elif message["type"] == "message":
                    self._changed(str(message["data"]))
