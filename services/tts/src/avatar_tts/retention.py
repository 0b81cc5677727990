"""Keeps the audio folder within its limits, fairly across callers.

Holders. Every file is held by whoever it was made or handed out for (`holder_of`): a
signed-in user, or, for an anonymous caller, their client address (all the ids minted there
together: ids cost nothing, so one holder per id would let one client hold many shares).

Bytes. A cache hit is a hard link to audio already on disk (files.py): a new name, no new
bytes. So each audio (an inode) is counted once, in the folder's total and in the share of
the one holder who pays for it: whoever made it, and once their file is gone while other
names remain, the holder of the most recently used of those (someone who keeps it pays; their
own limits apply from their next new file, the folder's at once).
A name costs its holder no bytes, but it is a file among their ASSETS_MAX_FILES_PER_USER and
an entry in the index.

Redis keys (named inside the scripts, where a holder's and an inode's become known: one
Redis, not a cluster):
- `tts:files`: path -> last use, every file (name);
- `tts:link-of`: path -> "{inode} {holder}";
- `tts:inodes`: inode -> "{size} {path of the file whose holder pays}";
- `tts:links:{inode}`: the inode's paths -> last use;
- `tts:held:{holder}`: the holder's paths -> last use;
- `tts:paid:{holder}`: the paths whose bytes the holder pays -> last use;
- `tts:usage`: holder -> bytes paid (a sorted set, so the largest payer is one read);
- `tts:count`: holder -> files held (likewise);
- `tts:bytes`: the bytes of every inode, each once;
- `tts:key-of`: inode -> the speech cache's key of the audio (store.py).
A use is a write, a cache hit or a download. The index is per-user data in Redis: each name
and each audio is charged to the global "audio" budget (avatar_shared.budget) while it is
indexed (NAME_BYTES, AUDIO_BYTES).

After each new file, files are evicted until none of these applies:
1. its holder holds more than ASSETS_MAX_FILES_PER_USER files: their least recently used;
2. its holder pays more than ASSETS_MAX_BYTES_PER_USER: the least recently used they pay for;
3. the folder holds more than ASSETS_MAX_BYTES: the least recently used the largest payer
   pays for;
4. the least recently used file of all is older than ASSETS_MAX_AGE_S (also applied by the
   service's periodic sweep, `expire`, so old audio goes when no new audio is made).
A new file the audio budget has no room for first makes room: the least recently used file
of the holder of the most files goes. Only when the budget is smaller than one new audio's
entries is new audio refused (503 storage_full); reads go on either way.
So one caller's audio pushes out their own first, and under pressure the largest holder gives
back first: no caller can evict another's audio while holding less than them, and names of
audio already stored (free to ask for) hold no bytes to count.
The step that forgets a file also forgets the speech cache's entries that name it (store.py),
so Redis keeps no entry for audio gone: its user's entry (if it names this file), and the
cache entry (if it names this path): that one moves to another name of the audio when the
audio stays on disk (a hit links that name), else goes.
"""

import asyncio
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.typing import EncodableT

from avatar_shared.budget import BUDGET_FUNCTIONS, Budget
from avatar_shared.rate import Caller
from avatar_tts.files import DiskFile, inode_of, remove

FILES, LINK_OF, INODES, USAGE, COUNT, TOTAL, KEY_OF = (
    "tts:files",
    "tts:link-of",
    "tts:inodes",
    "tts:usage",
    "tts:count",
    "tts:bytes",
    "tts:key-of",
)
# The speech cache's entries (store.py): `{CACHE_ENTRY}{key}`, `{USER_ENTRY}{user_id}:{key}`.
CACHE_ENTRY, USER_ENTRY = "tts:cache:", "tts:user:"
PER_HOLDER, PER_INODE = ("tts:held:", "tts:paid:"), "tts:links:"
OLDER_INDEX = "tts:holder-of"  # the index of the version before inodes were counted

# What the index costs Redis, charged to the audio budget while it lasts (measured: about
# 1.1 KB a name and 2.2 KB more for new audio, with 80-character paths). A name: its path in
# four index keys and the user's entry (store.py). Audio: its inode's record, cache key and
# key of names, its payer's entry and its cache entry. Fixed charges, so the budget gets
# back exactly what was charged.
NAME_BYTES, AUDIO_BYTES = 1024, 2048
ROOM_TRIES = 8  # files evicted at most to make room in the index for one

NEW_AUDIO, NEW_NAME, KNOWN, NO_ROOM = 2, 1, 0, -1

# KEYS of every script: the audio budget's (BUDGET_FUNCTIONS).
LUA_FUNCTIONS = (
    BUDGET_FUNCTIONS
    + f"""
local function split(entry)
  return string.match(entry, '^(%S+) (.*)$')
end
local function touch(path, now)
  local entry = redis.call('HGET', '{LINK_OF}', path)
  if not entry then return false end
  local inode, holder = split(entry)
  redis.call('ZADD', '{FILES}', 'XX', now, path)
  redis.call('ZADD', '{PER_INODE}' .. inode, 'XX', now, path)
  redis.call('ZADD', '{PER_HOLDER[0]}' .. holder, 'XX', now, path)
  redis.call('ZADD', '{PER_HOLDER[1]}' .. holder, 'XX', now, path)
  return true
end
local function hold(holder, delta)
  budget_hold(KEYS[1], KEYS[2], KEYS[3], holder, delta, 'inf')
end
local function pay(inode, size, path, holder, now)
  redis.call('HSET', '{INODES}', inode, size .. ' ' .. path)
  redis.call('ZADD', '{PER_HOLDER[1]}' .. holder, now, path)
  redis.call('ZINCRBY', '{USAGE}', size, holder)
  hold(holder, {AUDIO_BYTES})
end
local function decrement(key, by, member)
  if tonumber(redis.call('ZINCRBY', key, -by, member)) <= 0 then
    redis.call('ZREM', key, member)
  end
end
-- The cache's entries naming a file being forgotten (already gone from the inode's names).
local function forget_entries(inode, path, user_id, file_id)
  local key = redis.call('HGET', '{KEY_OF}', inode)
  if not key then return end  -- indexed without its key (rebuilt from the disk)
  local user_entry = '{USER_ENTRY}' .. user_id .. ':' .. key
  if redis.call('GET', user_entry) == file_id then redis.call('DEL', user_entry) end
  local cache_entry = '{CACHE_ENTRY}' .. key
  if redis.call('HGET', cache_entry, 'path') ~= path then return end
  local heir = redis.call('ZREVRANGE', '{PER_INODE}' .. inode, 0, 0)
  if heir[1] then  -- the audio stays under another name (a hard link): a hit links that
    redis.call('HSET', cache_entry, 'path', heir[1])
  else
    redis.call('DEL', cache_entry)
  end
end
"""
)

# ARGV: path, inode, size, holder, now, budget limit, the audio's cache key ('' if unknown).
# Returns NEW_AUDIO (its bytes counted), NEW_NAME (a name of audio counted already), KNOWN
# (marked as used) or NO_ROOM (the budget has no room: nothing counted).
KEEP = (
    LUA_FUNCTIONS
    + f"""
local path, inode, size, holder = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = tonumber(ARGV[5])
if touch(path, now) then return {KNOWN} end
local new_audio = redis.call('HEXISTS', '{INODES}', inode) == 0
local charge = {NAME_BYTES} + (new_audio and {AUDIO_BYTES} or 0)
budget_sweep(KEYS[1], KEYS[2], KEYS[3], now)
if not budget_fits(KEYS[1], charge, tonumber(ARGV[6])) then return {NO_ROOM} end
hold(holder, {NAME_BYTES})
redis.call('ZADD', '{FILES}', now, path)
redis.call('HSET', '{LINK_OF}', path, inode .. ' ' .. holder)
redis.call('ZADD', '{PER_INODE}' .. inode, now, path)
redis.call('ZADD', '{PER_HOLDER[0]}' .. holder, now, path)
redis.call('ZINCRBY', '{COUNT}', 1, holder)
if ARGV[7] ~= '' then redis.call('HSET', '{KEY_OF}', inode, ARGV[7]) end
if not new_audio then return {NEW_NAME} end
pay(inode, size, path, holder, now)
redis.call('INCRBY', '{TOTAL}', size)
return {NEW_AUDIO}
"""
)

# ARGV: path, holder (as the evicting call saw it), the user and file id the path names.
# Returns 1 when this call forgot the file (and so is the one to delete it), else 0.
FORGET = (
    LUA_FUNCTIONS
    + f"""
local path = ARGV[1]
local entry = redis.call('HGET', '{LINK_OF}', path)
if not entry then  -- forgotten already; any leftover of it must not be picked again
  redis.call('ZREM', '{FILES}', path)
  redis.call('ZREM', '{PER_HOLDER[0]}' .. ARGV[2], path)
  redis.call('ZREM', '{PER_HOLDER[1]}' .. ARGV[2], path)
  return 0
end
local inode, holder = split(entry)
redis.call('ZREM', '{FILES}', path)
redis.call('HDEL', '{LINK_OF}', path)
redis.call('ZREM', '{PER_INODE}' .. inode, path)
redis.call('ZREM', '{PER_HOLDER[0]}' .. holder, path)
forget_entries(inode, path, ARGV[3], ARGV[4])
decrement('{COUNT}', 1, holder)
hold(holder, -{NAME_BYTES})
local size, payer = split(redis.call('HGET', '{INODES}', inode) or '0 ')
if payer ~= path then return 1 end  -- a name of audio another file's holder pays for
size = tonumber(size)
redis.call('ZREM', '{PER_HOLDER[1]}' .. holder, path)
decrement('{USAGE}', size, holder)
hold(holder, -{AUDIO_BYTES})
local heir = redis.call('ZREVRANGE', '{PER_INODE}' .. inode, 0, 0, 'WITHSCORES')
if heir[1] then  -- the audio stays on disk under other names: their holder pays now
  local _, heir_holder = split(redis.call('HGET', '{LINK_OF}', heir[1]))
  pay(inode, size, heir[1], heir_holder, heir[2])
else
  redis.call('HDEL', '{INODES}', inode)
  redis.call('HDEL', '{KEY_OF}', inode)
  if redis.call('DECRBY', '{TOTAL}', size) <= 0 then redis.call('DEL', '{TOTAL}') end
end
return 1
"""
)

# ARGV: path, now. Marks an indexed file as used.
TOUCH = LUA_FUNCTIONS + "touch(ARGV[1], tonumber(ARGV[2]))"


def holder_of(caller: Caller) -> str:
    """Whose share a caller's audio is in: a signed-in user's own, an anonymous caller's
    address's (all its ids together)."""
    return caller.address_key or caller.key


class Retention:
    def __init__(
        self,
        redis: Redis,
        budget: Budget,
        max_bytes: int,
        max_bytes_per_holder: int,
        max_files_per_holder: int,
        max_age_s: float,
    ) -> None:
        self.redis, self.budget = redis, budget
        self.max_bytes, self.max_bytes_per_holder = max_bytes, max_bytes_per_holder
        self.max_files_per_holder, self.max_age_s = max_files_per_holder, max_age_s
        self._keep = redis.register_script(KEEP)
        self._forget = redis.register_script(FORGET)
        self._touch = redis.register_script(TOUCH)

    async def kept(self, path: Path, holder: str, key: str) -> None:
        """`path` was just written or handed out for `holder` (the audio of cache key `key`):
        count it (once), mark it as used, and make room if it is new. Raises the budget's
        `full()` when the index has no room for it (then nothing is counted: the caller
        removes the file)."""
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return  # evicted meanwhile by another request: nothing left to count
        for _ in range(ROOM_TRIES):
            kept = await self._keep_one(
                path, inode_of(stat), stat.st_size, holder, key, time.time()
            )
            if kept != NO_ROOM:
                break
            await self.make_room()
        else:
            raise self.budget.full()
        if kept != KNOWN:
            await self.evict(holder)

    async def make_room(self) -> None:
        """Room in the index for one more file: the least recently used file of the holder
        of the most files goes (their own, when a caller holds the most). Raises `full()`
        when the budget cannot hold one file's entries at all."""
        if self.budget.limit < NAME_BYTES + AUDIO_BYTES:
            raise self.budget.full()
        if await self.budget.used() + NAME_BYTES + AUDIO_BYTES <= self.budget.limit:
            return
        most = await self.redis.zrevrange(COUNT, 0, 0)
        victim = await self._oldest_of(PER_HOLDER[0], most[0]) if most else None
        if victim is None:
            raise self.budget.full()
        await self._evict(*victim)

    async def lost(self) -> bool:
        """Redis has no index of the files (it lost its data, or holds only the index of
        an older version): it must be rebuilt from the disk."""
        return not await self.redis.exists(LINK_OF)

    async def rebuild(self, files: list[DiskFile]) -> None:
        """Indexes the files found on disk, each held by its owner, so they are evicted in
        turn like any other. Every file is indexed, over the budget or not: a file the
        index does not know would never be evicted."""
        stale = [FILES, LINK_OF, INODES, USAGE, COUNT, TOTAL, KEY_OF, OLDER_INDEX]
        stale += self.budget.keys
        for prefix in (*PER_HOLDER, PER_INODE):
            stale += [key async for key in self.redis.scan_iter(match=f"{prefix}*", count=500)]
        for start in range(0, len(stale), 500):
            await self.redis.delete(*stale[start : start + 500])
        for start in range(0, len(files), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for file in files[start : start + 500]:
                    args = self._keep_args(
                        file.path, file.inode, file.size, file.owner, "", file.last_use
                    )
                    args[5] = 2**62  # no limit
                    await self._keep(keys=self.budget.keys, args=args, client=pipe)
                await pipe.execute()

    async def used(self, path: Path) -> None:
        await self._touch(args=[str(path), time.time()])

    async def evict(self, holder: str) -> None:
        while (victim := await self._next_victim(holder)) is not None:
            await self._evict(*victim)

    async def expire(self) -> None:
        """Evicts the files unused for longer than the age limit."""
        while (victim := await self._expired()) is not None:
            await self._evict(*victim)

    async def _keep_one(
        self, path: Path, inode: str, size: int, holder: str, key: str, now: float
    ) -> int:
        args = self._keep_args(path, inode, size, holder, key, now)
        return int(await self._keep(keys=self.budget.keys, args=args))

    def _keep_args(
        self, path: Path, inode: str, size: int, holder: str, key: str, now: float
    ) -> list[EncodableT]:
        return [str(path), inode, size, holder, now, self.budget.limit, key]

    async def _evict(self, path: str, holder: str) -> None:
        user_id, file_id = Path(path).parent.parent.name, Path(path).stem  # files.py's layout
        if await self._forget(
            keys=self.budget.keys, args=[path, holder, user_id, file_id]
        ):  # one replica wins each file
            await asyncio.to_thread(remove, Path(path))

    async def _next_victim(self, holder: str) -> tuple[str, str] | None:
        """The next file to evict and its holder, or None when all is within the limits."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(COUNT, holder)
            pipe.zscore(USAGE, holder)
            pipe.get(TOTAL)
            pipe.zrevrange(USAGE, 0, 0)
            files, paid, total, largest = await pipe.execute()
        if (files or 0) > self.max_files_per_holder:
            return await self._oldest_of(PER_HOLDER[0], holder)
        if (paid or 0) > self.max_bytes_per_holder:
            return await self._oldest_of(PER_HOLDER[1], holder)
        if int(total or 0) > self.max_bytes and largest:
            return await self._oldest_of(PER_HOLDER[1], largest[0])
        return await self._expired()

    async def _expired(self) -> tuple[str, str] | None:
        """The least recently used file of all and its holder, if older than the age limit."""
        oldest = await self.redis.zrange(FILES, 0, 0, withscores=True)
        if not oldest or oldest[0][1] >= time.time() - self.max_age_s:
            return None
        entry = await self.redis.hget(LINK_OF, oldest[0][0])  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        return oldest[0][0], entry.split(" ", 1)[1] if entry else ""

    async def _oldest_of(self, prefix: str, holder: str) -> tuple[str, str] | None:
        oldest = await self.redis.zrange(f"{prefix}{holder}", 0, 0)
        return (oldest[0], holder) if oldest else None
