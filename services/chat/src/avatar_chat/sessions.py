"""Chat sessions in Redis, owned by the chat service.

Keys (both expire after `SESSION_TTL_S` without use):
- `chat:session:{id}`: hash of owner, model, created_at, updated_at, prompt_tokens,
  completion_tokens (the LLM's own counts, summed over the session).
- `chat:session:{id}:messages`: list of JSON messages {role, content, at}, oldest first.

A session is written only after a reply succeeded, so a failed request leaves no trace.
Another user's session is reported as missing, never as forbidden: ids are not disclosed.
"""

import json
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from avatar_chat.errors import SessionNotFound


def _meta_key(session_id: str) -> str:
    return f"chat:session:{session_id}"


def _messages_key(session_id: str) -> str:
    return f"chat:session:{session_id}:messages"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SessionStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    async def check_owner(self, session_id: str, user_id: str) -> None:
        """Passes for a new session id or one of the caller's; 404 for anyone else's."""
        owner = await self.redis.hget(_meta_key(session_id), "owner")
        if owner is not None and owner != user_id:
            raise SessionNotFound(session_id)

    async def record_turn(
        self,
        session_id: str,
        user_id: str,
        exchanged: list[dict[str, str]],
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        meta, messages = _meta_key(session_id), _messages_key(session_id)
        now = _now()
        # HSETNX makes creation atomic: of two first requests, one creates, both append.
        if not await self.redis.hsetnx(meta, "owner", user_id):
            await self.check_owner(session_id, user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(meta, "created_at", now)
            pipe.hset(meta, mapping={"model": model, "updated_at": now})
            pipe.hincrby(meta, "prompt_tokens", prompt_tokens)
            pipe.hincrby(meta, "completion_tokens", completion_tokens)
            pipe.rpush(messages, *(json.dumps({**m, "at": now}) for m in exchanged))
            pipe.expire(meta, self.ttl_s)
            pipe.expire(messages, self.ttl_s)
            await pipe.execute()

    async def history(self, session_id: str, user_id: str) -> dict[str, Any]:
        meta = await self.redis.hgetall(_meta_key(session_id))
        if not meta or meta.get("owner") != user_id:
            raise SessionNotFound(session_id)
        raw = await self.redis.lrange(_messages_key(session_id), 0, -1)
        return {
            "session_id": session_id,
            "model": meta.get("model"),
            "created_at": meta.get("created_at"),
            "updated_at": meta.get("updated_at"),
            "usage": {
                "prompt_tokens": int(meta.get("prompt_tokens", 0)),
                "completion_tokens": int(meta.get("completion_tokens", 0)),
            },
            "messages": [json.loads(item) for item in raw],
        }

    async def delete(self, session_id: str, user_id: str) -> None:
        await self.check_owner(session_id, user_id)
        if not await self.redis.delete(_meta_key(session_id), _messages_key(session_id)):
            raise SessionNotFound(session_id)
