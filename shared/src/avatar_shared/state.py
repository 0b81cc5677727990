"""The lifespan state's types, and the one place a request's view of it gets its type back.

The lifespan yields `BaseState` merged with the service's own TypedDict (see app.py); Starlette
hands a copy of that dict to every request as `request.state`, which it types as `Any`. Readers
ask `lifespan_state(request, TheirState)["key"]` instead, so a wrong key or type is a type
error.
"""

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, TypeVar, cast

import httpx
from fastapi import Request
from redis.asyncio import Redis

if TYPE_CHECKING:  # identity.py reads this module's state: no import at run time
    from avatar_shared.identity import IdentityResolver

S = TypeVar("S")


class BaseState(TypedDict):
    """What every service's lifespan provides."""

    redis: Redis
    http: httpx.AsyncClient  # for peers and health probes; upstreams may have their own
    # Who is calling (services only, not the edge); verifies with auth's published keys.
    identity: NotRequired["IdentityResolver"]


def lifespan_state(request: Request, shape: type[S]) -> S:
    """This request's lifespan state as `shape` (a TypedDict: `BaseState` or a service's own)
    declares it. A cast, not a check: the lifespan built the dict from those TypedDicts."""
    state: dict[str, Any] = request.scope["state"]
    return cast(S, state)
