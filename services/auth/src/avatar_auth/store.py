"""Users and revoked tokens in Redis.

- `auth:user:{user_id}`: the user record (JSON). The id is generated once and never changes.
- `auth:account:{provider}:{sub}`: the user id of a provider account. Keyed by the provider's
  stable subject, never by email: an email can change hands, a `sub` cannot.
- `auth:revoked:{jti}` (tokens.revoked_key): a signed-out token, kept until it would expire.
"""

import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from avatar_shared.timestamps import utc_now
from avatar_shared.tokens import LEEWAY_S, revoked_key


def _user_key(user_id: str) -> str:
    return f"auth:user:{user_id}"


def _account_key(provider: str, sub: str) -> str:
    return f"auth:account:{provider}:{sub}"


class UserStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def signed_in(self, provider: str, sub: str, profile: dict[str, Any]) -> dict[str, Any]:
        """The user of this provider account, made on its first sign-in, with `profile`
        (email, email_verified, username, picture) refreshed and the sign-in time set."""
        new_id = str(uuid.uuid4())
        # SET NX: two first sign-ins racing on two replicas still make one user.
        claimed = await self.redis.set(_account_key(provider, sub), new_id, nx=True)
        user_id = new_id if claimed else await self.redis.get(_account_key(provider, sub))
        now = utc_now()
        user = await self.get(user_id) or {"id": user_id, "provider": provider, "created_at": now}
        user.update(profile, last_login_at=now)
        await self.redis.set(_user_key(user_id), json.dumps(user, ensure_ascii=False))
        return user

    async def get(self, user_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(_user_key(user_id))
        return json.loads(raw) if raw else None

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Until the token would stop verifying anyway (its expiry plus the clock leeway)."""
        until = expires_at + LEEWAY_S
        if until > time.time():
            await self.redis.set(revoked_key(jti), "1", exat=until)
