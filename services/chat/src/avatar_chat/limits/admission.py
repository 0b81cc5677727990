"""The concurrent-user limit: at most MAX_CONCURRENT_USERS chat sessions active at once,
shared by every replica through one Redis sorted set (`chat:active`: session id -> last
seen, Unix seconds by Redis's clock).

Admission is one Lua script, so it is atomic across replicas: it forgets sessions idle for
ACTIVE_SESSION_IDLE_S, lets an active session through (refreshing it), and admits a new one
only while there is room. Redis unreachable: refused (fail closed), so a broken limiter can
never let the GPU be overrun; it recovers by itself when Redis returns.
"""

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_chat.errors import LimiterUnavailable, TooManyUsers

ACTIVE = "chat:active"

# KEYS[1] active set; ARGV: session, idle seconds, limit. The time is Redis's own, so every
# replica reads one clock: no replica can see a session admitted "in its future".
# Returns {1} when admitted, else {0, seconds until the oldest active session expires}.
ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local idle, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - idle)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return {1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + idle - now)}
"""


class Admission:
    def __init__(self, redis: Redis, limit: int, idle_s: int) -> None:
        self.redis = redis
        self.limit = limit
        self.idle_s = idle_s
        self._admit = redis.register_script(ADMIT)

    async def admit(self, session_id: str) -> None:
        try:
            result = await self._admit(keys=[ACTIVE], args=[session_id, self.idle_s, self.limit])
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable() from exc
        if result[0] == 1:
            return
        retry_after = max(1, math.ceil(float(result[1])))
        raise TooManyUsers(
            f"{self.limit} chat sessions are active, the most at once; "
            f"try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    @asynccontextmanager
    async def provisional(self, session_id: str, new: bool) -> AsyncIterator[None]:
        """Admitted for the block, and kept after it. A new session whose turn fails in the
        block does not exist: its place goes back at once, so an LLM outage cannot fill the
        limit with phantom sessions."""
        await self.admit(session_id)
        try:
            yield
        except BaseException:
            if new:
                with suppress(RedisError):  # else it expires by itself
                    await self.release(session_id)
            raise

    async def release(self, session_id: str) -> None:
        await self.redis.zrem(ACTIVE, session_id)
