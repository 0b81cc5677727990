"""Keeps the audio folder within a size cap and an age limit, evicting least recently used
files first.

Redis keys: `tts:files` (sorted set: file path -> last use, Unix seconds) and `tts:bytes`
(their total size). A use is a write, a cache hit or a download. Evicting a file is enough
to evict its cache entry: a cache entry whose file is gone counts as a miss.
"""

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis

FILES, TOTAL = "tts:files", "tts:bytes"


class Retention:
    def __init__(self, redis: Redis, max_bytes: int, max_age_s: float) -> None:
        self.redis = redis
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s

    async def kept(self, path: Path, size: int) -> None:
        """`path` was just written or handed out: count it (once) and mark it as used."""
        if await self.redis.zadd(FILES, {str(path): time.time()}):  # 1 only when new
            await self.redis.incrby(TOTAL, size)
            await self.evict()

    async def used(self, path: Path) -> None:
        await self.redis.zadd(FILES, {str(path): time.time()}, xx=True)

    async def evict(self) -> None:
        oldest_allowed = time.time() - self.max_age_s
        while True:
            oldest = await self.redis.zrange(FILES, 0, 0, withscores=True)
            if not oldest:
                return
            path, last_use = oldest[0]
            too_big = int(await self.redis.get(TOTAL) or 0) > self.max_bytes
            if not too_big and last_use >= oldest_allowed:
                return
            if await self.redis.zrem(FILES, path):  # one replica wins each file
                size = await asyncio.to_thread(_remove, Path(path))
                await self.redis.decrby(TOTAL, size)


def _remove(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
        return size
    except FileNotFoundError:
        return 0
