"""Per-caller request rates, counted in Redis so every replica shares them (the moving
windows themselves are in windows.py): `RateLimit` for one kind of request, `Caller` for
whose budgets a request uses (the id, and for an anonymous caller its address too)."""

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from avatar_shared.errors import Answerable, AppError, ServiceUnavailable
from avatar_shared.identity import CallerIdentity, Identity
from avatar_shared.windows import HIT, RATE_FUNCTIONS, nonce, window_key


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"
    message = "Too many requests of this kind; try again after Retry-After seconds."


# Redis is unreachable: the limits fail closed.
class LimiterUnavailable(ServiceUnavailable):
    code = "limiter_unavailable"
    message = "Requests cannot be counted right now (the limiter is unavailable); try again soon."


# What a rate (or chat's admission) can answer, for `error_responses`.
RATE_ERRORS: tuple[Answerable, ...] = (RateLimited, LimiterUnavailable)


def caller_key(identity: Identity) -> str:
    """Whose budget a request uses: the user id, anonymous ids included. A caller who brought
    no anonymous id (a fresh one was just minted) is counted by the client address, so
    dropping the cookie on every request does not buy a fresh budget each time."""
    if not identity.new_anonymous:
        return identity.user_id
    # Not `address_key`: a budget counted per caller and per address must not count a
    # cookie-less caller twice in one key.
    return f"ip:{identity.address}"


def address_key(address: str) -> str:
    """The budgets every anonymous caller from one address group shares."""
    return f"addr:{address}"


@dataclass(frozen=True)
class Caller:
    identity: Identity
    key: str  # whose budgets (rates, shares) this request uses: `caller_key`

    @property
    def user_id(self) -> str:
        return self.identity.user_id

    @property
    def address_key(self) -> str | None:
        """For an anonymous caller, the key of its address's shared budgets (counted over all
        the ids minted there, which cost nothing); None for a signed-in one (an account is
        not free, and an office of signed-in users shares one address)."""
        return None if self.identity.signed_in else address_key(self.identity.address)


async def _caller(identity: CallerIdentity) -> Caller:
    return Caller(identity, caller_key(identity))


CallerDep = Annotated[Caller, Depends(_caller)]


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


# KEYS: the caller's window, then the address's (none for a signed-in caller). ARGV: the
# caller's limit, the address's, window seconds, nonce. Returns {'ok', 0}, {'caller', wait} or
# {'address', wait}; a hit is counted in both windows or in neither.
HIT_CALLER_AND_ADDRESS = (
    RATE_FUNCTIONS
    + """
local now, window = redis_now(), tonumber(ARGV[3])
local wait = rate_wait(KEYS[1], tonumber(ARGV[1]), window, now)
if wait > 0 then return {'caller', tostring(wait)} end
if KEYS[2] then
  local address_wait = rate_wait(KEYS[2], tonumber(ARGV[2]), window, now)
  if address_wait > 0 then return {'address', tostring(address_wait)} end
  rate_count(KEYS[2], window, now, ARGV[4])
end
rate_count(KEYS[1], window, now, ARGV[4])
return {'ok', '0'}
"""
)


class CallerRate:
    """A rate per caller and, for an anonymous one, per client address too (every id minted
    there together: ids are free): at most `limit` hits per caller and `per_address` per
    address in `window_s` seconds, checked and counted in one step, so a hit refused by
    one window costs nothing in the other. Windows `rate:{name}:{caller}` and
    `rate:{name}-address:{address}`."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        limits: tuple[int, int],
        window_s: int,
        what: str,
        per: str,
    ) -> None:
        self.name, (self.limit, self.per_address), self.window_s = name, limits, window_s
        self.what, self.per = what, per
        self._hit = redis.register_script(HIT_CALLER_AND_ADDRESS)

    async def hit(self, caller: Caller) -> None:
        """Counts one hit for `caller`, or raises 429 `rate_limited` with Retry-After."""
        keys = [window_key(self.name, caller.key)]
        if caller.address_key is not None:
            keys.append(window_key(f"{self.name}-address", caller.address_key))
        args: list[EncodableT] = [self.limit, self.per_address, self.window_s, nonce()]
        try:
            refused, wait = await self._hit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable() from exc
        if refused == "caller":
            raise rate_limited(float(wait), self.limit, self.what, self.per)
        if refused == "address":
            what = f"{self.what} from one network address without sign-in"
            raise rate_limited(float(wait), self.per_address, what, self.per)
