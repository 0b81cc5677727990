"""Keeps the audio folder within its limits, fairly across callers.

Every file is charged to a holder: the caller it was made for (`avatar_shared.rate.caller_key`:
the user, or the client address of a caller without an anonymous cookie). Redis keys:
- `tts:files`: file path -> last use (Unix seconds), every file;
- `tts:held:{holder}`: the holder's files -> last use;
- `tts:holder-of`: file path -> "{size} {holder}";
- `tts:usage`: holder -> bytes held (a sorted set, so the largest holder is one read);
- `tts:bytes`: the bytes of every file.
A use is a write, a cache hit or a download.

After each new file, files are evicted until none of these applies:
1. the new file's holder holds more than ASSETS_MAX_BYTES_PER_USER: their least recently used;
2. the folder holds more than ASSETS_MAX_BYTES: the least recently used of the largest holder;
3. the least recently used file of all is older than ASSETS_MAX_AGE_S.
So one caller's audio pushes out their own first, and under pressure the largest holder gives
back first: no caller can evict another's audio while holding less than them.
Evicting a file is enough to evict its cache entry: an entry whose file is gone is a miss.
"""

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

FILES, TOTAL, HOLDER_OF, USAGE = "tts:files", "tts:bytes", "tts:holder-of", "tts:usage"


def held(holder: str) -> str:
    return f"tts:held:{holder}"


# KEYS: files, total, holder-of, usage, held(holder). ARGV: path, size, holder, now.
# Returns 1 when the file is new (then counted), 0 when it was known (then marked as used).
KEEP = """
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if known then return 0 end
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZINCRBY', KEYS[4], ARGV[2], ARGV[3])
redis.call('INCRBY', KEYS[2], ARGV[2])
return 1
"""

# KEYS: files, total, holder-of, usage, held(holder). ARGV: path, holder.
# Returns 1 when this call forgot the file (and so is the one to delete it), else 0.
FORGET = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local entry = redis.call('HGET', KEYS[3], ARGV[1]) or '0 '
local size = tonumber(string.match(entry, '^(%d+)'))
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if tonumber(redis.call('ZINCRBY', KEYS[4], -size, ARGV[2])) <= 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
end
redis.call('DECRBY', KEYS[2], size)
return 1
"""


class Retention:
    def __init__(
        self, redis: Redis, max_bytes: int, max_bytes_per_holder: int, max_age_s: float
    ) -> None:
        self.redis = redis
        self.max_bytes, self.max_bytes_per_holder = max_bytes, max_bytes_per_holder
        self.max_age_s = max_age_s
        self._keep = redis.register_script(KEEP)
        self._forget = redis.register_script(FORGET)

    async def kept(self, path: Path, size: int, holder: str) -> None:
        """`path` was just written or handed out for `holder`: count it (once), mark it as
        used, and make room if it is new."""
        keys = [FILES, TOTAL, HOLDER_OF, USAGE, held(holder)]
        if await self._keep(keys=keys, args=[str(path), size, holder, time.time()]):
            await self.evict(holder)
        else:
            await self.used(path)

    async def lost(self) -> bool:
        """Redis has no index of the files (it lost its data, or holds only the index of
        an older version, which did not know holders): it must be rebuilt from the disk."""
        return not await self.redis.exists(HOLDER_OF)

    async def rebuild(self, files: list[tuple[Path, str, int, float]]) -> None:
        """Indexes the files found on disk (path, holder, size, last use), so they are
        evicted in turn like any other."""
        await self.redis.delete(FILES, TOTAL, USAGE)
        for start in range(0, len(files), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for path, holder, size, last_use in files[start : start + 500]:
                    keys = [FILES, TOTAL, HOLDER_OF, USAGE, held(holder)]
                    await self._keep(
                        keys=keys, args=[str(path), size, holder, last_use], client=pipe
                    )
                await pipe.execute()

    async def used(self, path: Path) -> None:
        entry = await self.redis.hget(HOLDER_OF, str(path))  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        if entry is None:
            return  # not (or no longer) kept
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(FILES, {str(path): now}, xx=True)
            pipe.zadd(held(entry.split(" ", 1)[1]), {str(path): now}, xx=True)
            await pipe.execute()

    async def evict(self, holder: str) -> None:
        while (victim := await self._next_victim(holder)) is not None:
            path, owner = victim
            keys = [FILES, TOTAL, HOLDER_OF, USAGE, held(owner)]
            if await self._forget(keys=keys, args=[path, owner]):  # one replica wins each file
                await asyncio.to_thread(_remove, Path(path))

    async def _next_victim(self, holder: str) -> tuple[str, str] | None:
        """The next file to evict and its holder, or None when all is within the limits."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(USAGE, holder)
            pipe.get(TOTAL)
            pipe.zrevrange(USAGE, 0, 0, withscores=True)
            pipe.zrange(FILES, 0, 0, withscores=True)
            holders_bytes, total, largest, oldest = await pipe.execute()
        if (holders_bytes or 0) > self.max_bytes_per_holder:
            return await self._oldest_of(holder)
        if int(total or 0) > self.max_bytes and largest:
            return await self._oldest_of(largest[0][0])
        if oldest and oldest[0][1] < time.time() - self.max_age_s:
            entry = await self.redis.hget(HOLDER_OF, oldest[0][0])  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
            return oldest[0][0], entry.split(" ", 1)[1] if entry else ""
        return None

    async def _oldest_of(self, holder: str) -> tuple[str, str] | None:
        oldest = await self.redis.zrange(held(holder), 0, 0)
        return (oldest[0], holder) if oldest else None


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
