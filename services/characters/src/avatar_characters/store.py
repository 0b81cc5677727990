"""User-made characters in Redis, owned by the characters service.

Keys: `characters:item:{id}` holds a character as JSON (with the raw Character Card when it
was imported); `characters:owner:{user_id}` is a sorted set of the user's character ids
scored by creation time, so listing is newest first. Reading one character is one round trip.
"""

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from avatar_characters.errors import CharacterNotFound, NotYourCharacter
from avatar_shared.timestamps import utc_now

USER_ID_PREFIX = "usr_"  # presets may not use it, so the two kinds of id never collide


def _item(character_id: str) -> str:
    return f"characters:item:{character_id}"


def _owned(user_id: str) -> str:
    return f"characters:owner:{user_id}"


class CharacterStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = utc_now()
        character = {
            **fields,
            "id": USER_ID_PREFIX + secrets.token_hex(8),
            "is_preset": False,
            "owner": user_id,
            "created_at": now,
            "updated_at": now,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_item(character["id"]), json.dumps(character, ensure_ascii=False), nx=True)
            pipe.zadd(_owned(user_id), {character["id"]: time.time()})
            created, _ = await pipe.execute()
        if not created:  # 64 random bits colliding: refuse rather than overwrite
            raise RuntimeError("character id collision")
        return character

    async def get(self, character_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(_item(character_id))
        return json.loads(raw) if raw else None

    async def owned(self, character_id: str, user_id: str) -> dict[str, Any]:
        return self._owned_by(await self.get(character_id), character_id, user_id)

    @staticmethod
    def _owned_by(
        character: dict[str, Any] | None, character_id: str, user_id: str
    ) -> dict[str, Any]:
        if character is None:
            raise CharacterNotFound(character_id)
        if character["owner"] != user_id:
            raise NotYourCharacter()
        return character

    async def update(
        self, character_id: str, user_id: str, apply: Callable[[dict], dict]
    ) -> dict[str, Any]:
        """Read, change with `apply`, write back; retried if another write came in between
        (optimistic WATCH), so concurrent updates never lose one another's changes."""
        key = _item(character_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    current = self._owned_by(
                        json.loads(raw) if raw else None, character_id, user_id
                    )
                    updated = {**current, **apply(current), "updated_at": utc_now()}
                    pipe.multi()
                    pipe.set(key, json.dumps(updated, ensure_ascii=False))
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def delete(self, character_id: str, user_id: str) -> None:
        await self.owned(character_id, user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_item(character_id))
            pipe.zrem(_owned(user_id), character_id)
            await pipe.execute()

    async def list_owned(self, user_id: str) -> list[dict[str, Any]]:
        ids = await self.redis.zrevrange(_owned(user_id), 0, -1)
        if not ids:
            return []
        raws = await self.redis.mget([_item(i) for i in ids])
        return [json.loads(raw) for raw in raws if raw]
