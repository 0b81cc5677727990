"""Admission to the chat: one atomic step, shared by every replica, that decides whether a
request may go on to the LLM. In order:

1. the caller's request rate (CHAT_RATE_PER_MIN, a moving minute);
2. the concurrent-session limit: at most MAX_CONCURRENT_USERS sessions active at once
   (`chat:active`: session id -> last seen). A session idle ACTIVE_SESSION_IDLE_S stops
   counting; an active one goes on; a new one needs room;
3. the caller's own share of it: at most MAX_SESSIONS_PER_USER active sessions
   (`chat:active-of:{caller}`). A caller's new session past that takes the place of their
   least recently used one, so one client cannot fill the limit for everyone else.

The rate is counted only for an admitted request: a request refused for want of room costs
the caller nothing. The whole step is one Lua script, with Redis's own clock, so it is exact
under a burst from many replicas. Redis unreachable: refused (fail closed), so a broken
limiter can never let the GPU be overrun; it recovers by itself when Redis returns.

The caller is `avatar_shared.rate.caller_key`: dropping the anonymous cookie on every request
buys neither a fresh rate budget nor a fresh set of sessions.
"""

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from avatar_chat.errors import TooManyUsers
from avatar_shared.rate import LimiterUnavailable, rate_limited
from avatar_shared.windows import RATE_FUNCTIONS, nonce, window_key

ACTIVE = "chat:active"
RATE_WINDOW_S = 60

# KEYS: the active set, the caller's sessions, the caller's rate window.
# ARGV: session, idle seconds, limit, per-caller cap, rate limit, rate window, nonce.
# Returns {'admitted', 1 if the session was added now else 0}, {'rate', wait} or {'full', wait}.
ADMIT = (
    RATE_FUNCTIONS
    + """
local active, mine, rate = KEYS[1], KEYS[2], KEYS[3]
local session, idle, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, per_window, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = redis_now()
local wait = rate_wait(rate, per_window, window, now)
if wait > 0 then
  return {'rate', tostring(wait)}
end
redis.call('ZREMRANGEBYSCORE', active, '-inf', now - idle)
redis.call('ZREMRANGEBYSCORE', mine, '-inf', now - idle)
local added = 0
if redis.call('ZSCORE', active, session) then
  -- XX: only a session this caller added is theirs to replace later.
  redis.call('ZADD', mine, 'XX', now, session)
else
  if redis.call('ZCARD', mine) >= cap then
    local replaced = redis.call('ZRANGE', mine, 0, 0)[1]
    redis.call('ZREM', active, replaced)
    redis.call('ZREM', mine, replaced)
  end
  if redis.call('ZCARD', active) >= limit then
    local oldest = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
    return {'full', tostring(tonumber(oldest[2]) + idle - now)}
  end
  redis.call('ZADD', mine, now, session)
  added = 1
end
redis.call('EXPIRE', mine, idle)  -- lives while any of the caller's sessions is in use
redis.call('ZADD', active, now, session)
rate_count(rate, window, now, ARGV[7])
return {'admitted', added}
"""
)


class Admission:
    def __init__(
        self, redis: Redis, limit: int, idle_s: int, per_caller: int, rate_per_min: int
    ) -> None:
        self.redis = redis
        self.limit, self.idle_s, self.per_caller = limit, idle_s, per_caller
        self.rate_per_min = rate_per_min
        self._admit = redis.register_script(ADMIT)

    async def admit(self, session_id: str, caller: str) -> bool:
        """Admits the request, counting it against the caller's rate; True when its session
        was added to the active ones now (and so is this request's to give back)."""
        keys = [ACTIVE, sessions_of(caller), window_key("chat", caller)]
        args: list[EncodableT] = [session_id, self.idle_s, self.limit, self.per_caller]
        try:
            result = await self._admit(
                keys=keys, args=[*args, self.rate_per_min, RATE_WINDOW_S, nonce()]
            )
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable() from exc
        outcome, detail = result  # the shared pool decodes replies to str
        if outcome == "admitted":
            return int(detail) == 1
        if outcome == "rate":
            raise rate_limited(float(detail), self.rate_per_min, "chat requests", "a minute")
        retry_after = max(1, math.ceil(float(detail)))
        raise TooManyUsers(
            f"{self.limit} chat sessions are active, the most at once; "
            f"try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    @asynccontextmanager
    async def provisional(self, session_id: str, caller: str) -> AsyncIterator[None]:
        """Admitted for the block, and kept after it. A session added by this request whose
        turn fails in the block does not exist: its place goes back at once, so an LLM outage
        (or a client naming session ids it does not own) cannot fill the limit."""
        added = await self.admit(session_id, caller)
        try:
            yield
        except BaseException:
            if added:
                with suppress(RedisError):  # else it expires by itself
                    await self.release(session_id, caller)
            raise

    async def active(self) -> int:
        """Sessions that count now (those idle too long are trimmed at the next admission)."""
        active: int = await self.redis.zcount(ACTIVE, f"({time.time() - self.idle_s}", "+inf")
        return active

    async def release(self, session_id: str, caller: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(ACTIVE, session_id)
            pipe.zrem(sessions_of(caller), session_id)
            await pipe.execute()


def sessions_of(caller: str) -> str:
    return f"chat:active-of:{caller}"
