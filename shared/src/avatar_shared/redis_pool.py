"""One Redis connection pool per process, opened and closed by the app's lifespan.

Timeouts are short so a stopped Redis turns into a quick 503, and the pool reconnects by
itself when Redis comes back: no service restart is needed.
"""

from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from avatar_shared.state import BaseState, lifespan_state


def connection_options(timeout_s: float) -> dict[str, Any]:
    """For every Redis client of ours (the pool below, the rate limiter's own)."""
    return {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
        "health_check_interval": 30,
        # One quick retry covers a connection the server closed while idle, or that died
        # with a Redis restart: the first request after an outage does not fail for it.
        "retry": Retry(NoBackoff(), retries=1),
    }


def open_redis(url: str, timeout_s: float) -> Redis:
    return Redis.from_url(url, decode_responses=True, **connection_options(timeout_s))


async def get_redis(request: Request) -> Redis:
    return lifespan_state(request, BaseState)["redis"]


RedisDep = Annotated[Redis, Depends(get_redis)]
