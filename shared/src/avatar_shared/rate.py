"""Per-caller request rates, counted in Redis so every replica shares them.

A rate is a moving window: at most `limit` hits in any `window_s` seconds. Each caller's hits
are one sorted set, `rate:{name}:{caller}` (member: a random nonce, score: the time by
Redis's own clock), trimmed on
every check and expiring with the window, so a key holds at most `limit` entries and idle
callers leave nothing behind. A refused hit is not counted.

The Lua functions below are shared: `RateLimit` runs them alone, and a service that must
count a hit only when another check passes too (chat's admission) runs them inside its own
script, so the two decisions are one atomic step.
"""

import math
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_shared.errors import Answerable, AppError, ServiceUnavailable
from avatar_shared.identity import CallerIdentity, Identity

# rate_wait(key, limit, window, now): seconds until a hit is allowed, 0 when it is now.
# rate_count(key, window, now, nonce): counts a hit.
RATE_FUNCTIONS = """
local function rate_wait(key, limit, window, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then
    return 0
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
local function rate_count(key, window, now, nonce)
  redis.call('ZADD', key, now, nonce)
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
local function redis_now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
"""

# KEYS[1] the caller's window; ARGV: limit, window seconds, nonce. Returns the wait (0: counted).
HIT = (
    RATE_FUNCTIONS
    + """
local now = redis_now()
local wait = rate_wait(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if wait == 0 then
  rate_count(KEYS[1], tonumber(ARGV[2]), now, ARGV[3])
end
return tostring(wait)
"""
)


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"
    message = "Too many requests of this kind; try again after Retry-After seconds."


# Redis is unreachable: the limits fail closed.
class LimiterUnavailable(ServiceUnavailable):
    code = "limiter_unavailable"
    message = "Requests cannot be counted right now (the limiter is unavailable); try again soon."


# What a rate (or chat's admission) can answer, for `error_responses`.
RATE_ERRORS: tuple[Answerable, ...] = (RateLimited, LimiterUnavailable)


def caller_key(identity: Identity, request: Request) -> str:
    """Whose budget a request uses: the user id, anonymous ids included. A caller who brought
    no anonymous id (a fresh one was just minted) is counted by the client address, so
    dropping the cookie on every request does not buy a fresh budget each time."""
    if not identity.new_anonymous:
        return identity.user_id
    # uvicorn takes the client address from the gateway's X-Forwarded-For (trusted from the
    # gateway's address only), so a client cannot pick it.
    return f"ip:{request.client.host if request.client else '-'}"


@dataclass(frozen=True)
class Caller:
    identity: Identity
    key: str  # whose budgets (rates, shares) this request uses: `caller_key`

    @property
    def user_id(self) -> str:
        return self.identity.user_id


async def _caller(identity: CallerIdentity, request: Request) -> Caller:
    return Caller(identity, caller_key(identity, request))


CallerDep = Annotated[Caller, Depends(_caller)]


def window_key(name: str, caller: str) -> str:
    return f"rate:{name}:{caller}"


def nonce() -> str:
    """A hit's member in the window: unique, so two hits in one microsecond are both counted."""
    return secrets.token_hex(8)


def rate_limited(wait_s: float, limit: int, what: str, per: str) -> RateLimited:
    retry_after = max(1, math.ceil(wait_s))
    return RateLimited(
        f"At most {limit} {what} {per}; try again in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


class RateLimit:
    """At most `limit` hits per caller in `window_s` seconds; `what` names them in the 429
    message ("voice requests"), `per` the window ("a minute")."""

    def __init__(
        self, redis: Redis, name: str, limit: int, window_s: int, what: str, per: str
    ) -> None:
        self.redis = redis
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self.what, self.per = what, per
        self._hit = redis.register_script(HIT)

    async def hit(self, caller: str) -> None:
        """Counts one hit for `caller`, or raises 429 `rate_limited` with Retry-After."""
        try:
            wait = await self._hit(
                keys=[window_key(self.name, caller)], args=[self.limit, self.window_s, nonce()]
            )
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable() from exc
        if float(wait) > 0:
            raise rate_limited(float(wait), self.limit, self.what, self.per)
