"""A per-user request rate for the chat path (CHAT_RATE_PER_MIN), so one user cannot take
the GPU from everyone else. Built on the `limits` package (moving window, in Redis, shared
by every replica). The key is the user id, anonymous ids included; a caller who brought no
anonymous id (a fresh one was just minted) is counted by the client address the gateway
reports, so dropping the cookie on every request does not buy a fresh budget each time.
"""

import math
import time

from fastapi import Request
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from avatar_chat.errors import LimiterUnavailable, RateLimited
from avatar_shared.identity import Identity
from avatar_shared.redis_pool import connection_options


def rate_key(identity: Identity, request: Request) -> str:
    if not identity.new_anonymous:
        return identity.user_id
    # uvicorn takes the client address from the gateway's X-Forwarded-For (trusted from the
    # gateway's address only), so a client cannot pick it.
    return f"ip:{request.client.host if request.client else '-'}"


class ChatRateLimit:
    def __init__(self, redis_url: str, per_minute: int) -> None:
        self.storage = RedisStorage(
            "async+" + redis_url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix="chat:rate",
            **connection_options(1.0),
        )
        self.item = RateLimitItemPerMinute(per_minute)
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def check(self, key: str) -> None:
        try:
            if await self.limiter.hit(self.item, key):
                return
            stats = await self.limiter.get_window_stats(self.item, key)
        except StorageError as exc:
            raise LimiterUnavailable() from exc
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"At most {self.item.amount} chat requests a minute; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )
