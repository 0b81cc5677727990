"""The speech cache in Redis, owned by the tts service.

Keys:
- `tts:cache:{key}`: hash of the canonical file (path, format, duration, size) for a cache
  key (a hash of every parameter that changes the sound). A file evicted from disk makes its
  entry a miss.
- `tts:lock:{key}`: held while one replica synthesizes; the others wait for its result.
- `tts:user:{user_id}:{key}`: the file id that user already has for that key.
The cache and user keys are written only for a file the retention index holds, and the step
that forgets the file forgets them too (retention.py): Redis keeps no entry for audio evicted.
They also expire after ASSETS_MAX_AGE_S unused, as their files do.
(`retention` keeps `tts:files` and `tts:bytes`.)
"""

import asyncio
import hashlib
import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from avatar_shared.locks import redis_lock
from avatar_tts.files import StoredAudio
from avatar_tts.retention import CACHE_ENTRY, LINK_OF, USER_ENTRY

LOCK_S = 120  # longer than any synthesis; a crashed holder's lock expires

# KEYS: the entry; ARGV: the path of the file it names, ttl, then its value (a user's file
# id) or its fields and values (a cache entry). Written only while retention indexes that
# file: an entry written after the file was forgotten would never be forgotten.
WRITE_ENTRY = f"""
if redis.call('HEXISTS', '{LINK_OF}', ARGV[1]) == 0 then return 0 end
if #ARGV == 3 then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def cache_key(parameters: dict[str, Any]) -> str:
    normalised = {**parameters, "text": " ".join(str(parameters.get("text", "")).split())}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


class SpeechStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = redis, ttl_s
        self._write = redis.register_script(WRITE_ENTRY)

    async def cached(self, key: str) -> StoredAudio | None:
        """The entry, if its file is still there; a hit keeps it for another ttl."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{CACHE_ENTRY}{key}")
            pipe.expire(f"{CACHE_ENTRY}{key}", self.ttl_s)
            entry, _ = await pipe.execute()
        if not entry or not await asyncio.to_thread(Path(entry["path"]).exists):
            return None  # evicted from disk: make it again
        return StoredAudio(
            Path(entry["path"]), entry["format"], float(entry["duration"]), int(entry["size"])
        )

    async def remember(self, key: str, audio: StoredAudio) -> None:
        """`audio` (a file retention indexes) as the cache's for `key`."""
        path = str(audio.path)
        fields: list[EncodableT] = ["path", path, "format", audio.media_type]
        fields += ["duration", audio.duration, "size", audio.size]
        args = [path, self.ttl_s, *fields]
        await self._write(keys=[f"{CACHE_ENTRY}{key}"], args=args)

    async def users_file_id(self, user_id: str, key: str) -> str | None:
        file_id: str | None = await self.redis.getex(f"{USER_ENTRY}{user_id}:{key}", ex=self.ttl_s)
        return file_id

    async def set_users_file(self, user_id: str, key: str, path: Path) -> None:
        """`path` (a file retention indexes) as the user's file for `key`."""
        await self._write(
            keys=[f"{USER_ENTRY}{user_id}:{key}"], args=[str(path), self.ttl_s, path.stem]
        )

    def making(self, key: str, wait_s: float) -> AbstractAsyncContextManager[None]:
        """Held while this key's speech is made, across replicas (`wait_s=0`: no waiting)."""
        return redis_lock(self.redis, f"tts:lock:{key}", expire_s=LOCK_S, wait_s=wait_s)
