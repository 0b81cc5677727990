"""One Redis connection pool per process, opened and closed by the app's lifespan.

Timeouts are short so a stopped Redis turns into a quick 503, and the pool reconnects by
itself when Redis comes back: no service restart is needed.
"""

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def open_redis(url: str, timeout_s: float) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
        # One quick retry covers a connection the server closed while idle.
        retry=Retry(NoBackoff(), retries=1),
    )


def get_redis(request: Request) -> Redis:
    return request.state.redis


RedisDep = Annotated[Redis, Depends(get_redis)]
