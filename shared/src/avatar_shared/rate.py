"""Per-caller request rates, counted in Redis so every replica shares them (the moving
windows themselves are in windows.py): `RateLimit` for one kind of request, `Caller` for
whose budgets a request uses (the id, and for an anonymous caller its address too)."""

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from redis.exceptions import RedisError

from avatar_shared.errors import Answerable, AppError, ServiceUnavailable
from avatar_shared.identity import CallerIdentity, Identity
from avatar_shared.windows import HIT, nonce, window_key


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
