"""The speech cache in Redis, owned by the tts service.

Keys:
- `tts:cache:{key}`: hash of the canonical file (path, format, duration, size) for a cache
  key (a hash of every parameter that changes the sound). A file evicted from disk makes its
  entry a miss.
- `tts:lock:{key}`: held while one replica synthesizes; the others wait for its result.
- `tts:user:{user_id}:{key}`: the file id that user already has for that key.
The cache and user keys live as long as the files they name may (ASSETS_MAX_AGE_S since
their last use), so Redis does not keep entries for audio long deleted.
(`retention` keeps `tts:files` and `tts:bytes`.)
"""

import asyncio
import hashlib
import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from avatar_shared.locks import redis_lock
from avatar_tts.files import StoredAudio

LOCK_S = 120  # longer than any synthesis; a crashed holder's lock expires


def cache_key(parameters: dict[str, Any]) -> str:
    normalised = {**parameters, "text": " ".join(str(parameters.get("text", "")).split())}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


class SpeechStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = redis, ttl_s

    async def cached(self, key: str) -> StoredAudio | None:
        """The entry, if its file is still there; a hit keeps it for another ttl."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"tts:cache:{key}")
            pipe.expire(f"tts:cache:{key}", self.ttl_s)
            entry, _ = await pipe.execute()
        if not entry or not await asyncio.to_thread(Path(entry["path"]).exists):
            return None  # evicted from disk: make it again
        return StoredAudio(
            Path(entry["path"]), entry["format"], float(entry["duration"]), int(entry["size"])
        )

    async def remember(self, key: str, audio: StoredAudio) -> None:
        mapping = {
            "path": str(audio.path),
            "format": audio.media_type,
            "duration": audio.duration,
            "size": audio.size,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"tts:cache:{key}", mapping=mapping)
            pipe.expire(f"tts:cache:{key}", self.ttl_s)
            await pipe.execute()

    async def users_file_id(self, user_id: str, key: str) -> str | None:
        file_id: str | None = await self.redis.getex(f"tts:user:{user_id}:{key}", ex=self.ttl_s)
        return file_id

    async def set_users_file_id(self, user_id: str, key: str, file_id: str) -> None:
        await self.redis.set(f"tts:user:{user_id}:{key}", file_id, ex=self.ttl_s)

    def making(self, key: str, wait_s: float) -> AbstractAsyncContextManager[None]:
        """Held while this key's speech is made, across replicas (`wait_s=0`: no waiting)."""
        return redis_lock(self.redis, f"tts:lock:{key}", expire_s=LOCK_S, wait_s=wait_s)
