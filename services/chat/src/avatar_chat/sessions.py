"""Chat sessions in Redis, owned by the chat service.

Keys (both expire after `SESSION_TTL_S` without use):
- `chat:session:{id}`: hash of owner, model, created_at, updated_at, prompt_tokens,
  completion_tokens (the LLM's own counts, summed over the session).
- `chat:session:{id}:messages`: list of JSON messages {role, content, at}, oldest first.

A session is written only after a reply succeeded, so a failed request leaves no trace.
Another user's session is reported as missing, never as forbidden: ids are not disclosed.
"""

import json
from typing import Any

from redis.asyncio import Redis

from avatar_chat.errors import SessionNotFound
from avatar_shared.timestamps import utc_now


def _meta_key(session_id: str) -> str:
    return f"chat:session:{session_id}"


def _messages_key(session_id: str) -> str:
    return f"chat:session:{session_id}:messages"


# Appends one turn atomically and in one round trip; refuses (returns 0) when another user
# owns the session. KEYS: meta, messages. ARGV: user, model, now, prompt tokens, completion
# tokens, ttl, then the messages as JSON.
RECORD_TURN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_at', ARGV[3]) end
redis.call('HSET', KEYS[1], 'model', ARGV[2], 'updated_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[5])
redis.call('RPUSH', KEYS[2], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"""


class SessionStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._record_turn = redis.register_script(RECORD_TURN)

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
        now = utc_now()
        recorded = await self._record_turn(
            keys=[_meta_key(session_id), _messages_key(session_id)],
            args=[
                user_id,
                model,
                now,
                prompt_tokens,
                completion_tokens,
                self.ttl_s,
                *(json.dumps({**m, "at": now}, ensure_ascii=False) for m in exchanged),
            ],
        )
        if not recorded:
            raise SessionNotFound(session_id)

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
