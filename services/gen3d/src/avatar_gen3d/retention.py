"""Keeps the 3D files within their limits, fairly across holders (as tts keeps its audio).

A job's folder (`files.JobFolder`) is the unit: counted when its input is stored, counted
again when its results replace the input (the worker removes the input), and removed whole.
Each is charged to its job's holder: a signed-in user, or the client address of anonymous
callers (their ids are free to make; the address is not). The input of a job not finished
yet counts against its holder but is never removed for bytes (its job would fail): it
pushes out their finished jobs' files instead, and a holder has few such jobs at once
(MAX_QUEUED_JOBS_PER_USER, _PER_ADDRESS). Redis keys:
- `gen3d:files`: folder -> when last written (Unix seconds), every folder;
- `gen3d:held:{holder}`: the holder's folders of finished jobs -> when last written;
- `gen3d:holder-of`: folder -> "{bytes} {holder}";
- `gen3d:usage`: holder -> bytes held (a sorted set: the largest holder is one read);
- `gen3d:bytes`: the bytes of every folder.

After each write, folders are removed until none of these applies:
1. the writer's holder holds more than GEN3D_MAX_BYTES_PER_USER: their oldest;
2. all folders hold more than GEN3D_MAX_BYTES: the oldest of the largest holder;
3. the oldest folder of all is older than GEN3D_MAX_AGE_S.
So one caller's files push out their own first, and no caller can push out another's while
holding less than them. A rule whose holder has no finished job's folder left removes
nothing. A removed job's status stays; its result answers 404.
"""

import asyncio
import logging
import shutil
import time
from pathlib import Path

from redis.asyncio import Redis

log = logging.getLogger("avatar.gen3d.retention")

FILES, TOTAL, HOLDER_OF, USAGE = "gen3d:files", "gen3d:bytes", "gen3d:holder-of", "gen3d:usage"


def held(holder: str) -> str:
    return f"gen3d:held:{holder}"


# KEYS: files, total, holder-of, usage, held(holder). ARGV: folder, bytes, holder, now, 1 if
# its job is finished (else 0: not listed in held(), so not removed for bytes). A folder
# counted before is counted again at its new size (its results replaced its input).
KEEP = """
local entry = redis.call('HGET', KEYS[3], ARGV[1])
local before = entry and tonumber(string.match(entry, '^(%d+)')) or 0
local change = tonumber(ARGV[2]) - before
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1]) end
redis.call('ZINCRBY', KEYS[4], change, ARGV[3])
redis.call('INCRBY', KEYS[2], change)
"""

# KEYS: files, total, holder-of, usage. ARGV: folder, prefix of held(), the holder it was
# found under ("" if none). The folder's holder when this call forgot it (and so is the one
# to remove it), else false (and it is no longer listed anywhere).
FORGET = """
local entry = redis.call('HGET', KEYS[3], ARGV[1])
if not entry then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', ARGV[2] .. ARGV[3], ARGV[1])
  return false
end
local size, holder = string.match(entry, '^(%d+) (.*)$')
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', ARGV[2] .. holder, ARGV[1])
if tonumber(redis.call('ZINCRBY', KEYS[4], -tonumber(size), holder)) <= 0 then
  redis.call('ZREM', KEYS[4], holder)
end
redis.call('DECRBY', KEYS[2], size)
return holder
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

    async def kept(self, folder: Path, size: int, holder: str, *, finished: bool = True) -> None:
        """`folder` was just written for `holder` and holds `size` bytes: count it, then make
        room. The folder of a job not `finished` (its input) is counted, not removed for
        bytes, until it is kept again as finished."""
        keys = [FILES, TOTAL, HOLDER_OF, USAGE, held(holder)]
        await self._keep(keys=keys, args=[str(folder), size, holder, time.time(), int(finished)])
        await self.evict(holder)

    async def remove(self, folder: Path) -> None:
        """The folder goes now (its job failed or was cancelled)."""
        await self._forget(keys=[FILES, TOTAL, HOLDER_OF, USAGE], args=[str(folder), held(""), ""])
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def counts(self, folder: Path) -> bool:
        """Whether `folder` is indexed (not removed, nor being removed, by retention)."""
        return bool(await self.redis.hexists(HOLDER_OF, str(folder)))  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"

    async def lost(self) -> bool:
        """Redis has no index of the folders (it lost its data, or an older version kept
        none): it must be rebuilt from the disk."""
        return not await self.redis.exists(HOLDER_OF)

    async def rebuild(self, folders: list[tuple[Path, str, int, float]]) -> None:
        """Indexes the folders found on disk (folder, holder, bytes, last written), so they
        are removed in turn like any other, and applies the limits."""
        await self.redis.delete(FILES, TOTAL, USAGE)
        for start in range(0, len(folders), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for folder, holder, size, written in folders[start : start + 500]:
                    keys = [FILES, TOTAL, HOLDER_OF, USAGE, held(holder)]
                    args: list[str | int | float] = [str(folder), size, holder, written, 1]
                    await self._keep(keys=keys, args=args, client=pipe)
                await pipe.execute()
        for holder in {holder for _, holder, _, _ in folders}:
            await self.evict(holder)

    async def evict(self, holder: str) -> None:
        while (victim := await self._next_victim(holder)) is not None:
            folder, found_under = victim
            keys = [FILES, TOTAL, HOLDER_OF, USAGE]
            if await self._forget(keys=keys, args=[folder, held(""), found_under]):
                log.info("removed the 3D files of job %s (retention)", Path(folder).name)
                await asyncio.to_thread(shutil.rmtree, folder, True)  # one replica wins each

    async def _next_victim(self, holder: str) -> tuple[str, str] | None:
        """The next folder to remove, or None when all is within the limits."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(USAGE, holder)
            pipe.get(TOTAL)
            pipe.zrevrange(USAGE, 0, 0)
            pipe.zrange(FILES, 0, 0, withscores=True)
            holders_bytes, total, largest, oldest = await pipe.execute()
        victim = None
        if (holders_bytes or 0) > self.max_bytes_per_holder:
            victim = await self._oldest_of(holder)
        if victim is None and int(total or 0) > self.max_bytes and largest:
            victim = await self._oldest_of(largest[0])
        if victim is None and oldest and oldest[0][1] < time.time() - self.max_age_s:
            victim = str(oldest[0][0]), ""
        return victim

    async def _oldest_of(self, holder: str) -> tuple[str, str] | None:
        oldest = await self.redis.zrange(held(holder), 0, 0)
        return (str(oldest[0]), holder) if oldest else None
