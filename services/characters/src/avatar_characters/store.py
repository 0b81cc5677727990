"""User-made characters in Redis, owned by the characters service.

Keys:
- `characters:item:{id}`: a character as JSON, without its raw Character Card, so reading one
  (chat's persona fetch) or a page of them stays small;
- `characters:card:{id}`: the raw card it was imported from, read only on export;
- `characters:owner:{user_id}`: the user's character ids scored by creation time (Unix
  seconds), so a listing is pages of this set, newest first;
- `characters:bytes:{user_id}`: the bytes the user's characters and cards take.

Every write that changes sizes is one script or one WATCHed transaction, so the count and
byte quotas hold exactly under concurrent writes, and no write ever overwrites another's.
"""

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from avatar_characters.errors import CharacterNotFound, NotYourCharacter, QuotaExceeded
from avatar_shared.pages import Page
from avatar_shared.timestamps import utc_now

USER_ID_PREFIX = "usr_"  # presets may not use it, so the two kinds of id never collide
MAX_BATCH = 256  # most records read at once while a filtered listing fills its page

# KEYS: item, card, owner set, bytes. ARGV: record, card ('' for none), id, score, count
# quota, byte quota. Returns 'ok', 'collision', 'count' or 'bytes'.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'collision' end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 'count' end
local size = #ARGV[1] + #ARGV[2]
if tonumber(redis.call('GET', KEYS[4]) or '0') + size > tonumber(ARGV[6]) then
  return 'bytes'
end
redis.call('SET', KEYS[1], ARGV[1])
if #ARGV[2] > 0 then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('INCRBY', KEYS[4], size)
return 'ok'
"""

# KEYS: item, card, owner set, bytes. ARGV: id. Gives the bytes back exactly once, however
# many deletes race.
DELETE = """
local size = redis.call('STRLEN', KEYS[1]) + redis.call('STRLEN', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('DECRBY', KEYS[4], size) <= 0 then redis.call('DEL', KEYS[4]) end
"""


def _item(character_id: str) -> str:
    return f"characters:item:{character_id}"


def _card(character_id: str) -> str:
    return f"characters:card:{character_id}"


def _owned(user_id: str) -> str:
    return f"characters:owner:{user_id}"


def _bytes(user_id: str) -> str:
    return f"characters:bytes:{user_id}"


PageKey = tuple[float, str]
T = TypeVar("T")  # (creation score, id): where a page of a listing ends


class CharacterStore:
    def __init__(self, redis: Redis, max_count: int, max_bytes: int) -> None:
        self.redis = redis
        self.max_count, self.max_bytes = max_count, max_bytes
        self._create = redis.register_script(CREATE)
        self._delete = redis.register_script(DELETE)

    async def create(
        self, user_id: str, fields: dict[str, Any], card: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        now = utc_now()
        character = {
            **fields,
            "id": USER_ID_PREFIX + secrets.token_hex(8),
            "is_preset": False,
            "owner": user_id,
            "created_at": now,
            "updated_at": now,
        }
        record = json.dumps(character, ensure_ascii=False)
        raw_card = json.dumps(card, ensure_ascii=False) if card is not None else ""
        keys = [_item(character["id"]), _card(character["id"]), _owned(user_id), _bytes(user_id)]
        args = [record, raw_card, character["id"], time.time(), self.max_count, self.max_bytes]
        outcome = await self._create(keys=keys, args=args)
        if outcome == "collision":  # 64 random bits colliding: refuse rather than overwrite
            raise RuntimeError("character id collision")
        if outcome != "ok":
            raise self._over_quota(outcome)
        return character

    def _over_quota(self, which: str) -> QuotaExceeded:
        if which == "count":
            return QuotaExceeded(
                f"You have {self.max_count} characters, the most one user may keep; "
                "delete one first."
            )
        return QuotaExceeded(
            f"Your characters would take more than {self.max_bytes} bytes, the most one user "
            "may keep; delete one first."
        )

    async def get(self, character_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(_item(character_id))
        return json.loads(raw) if raw else None

    async def card(self, character_id: str) -> dict[str, Any] | None:
        """The raw card a character was imported from, if it was."""
        raw = await self.redis.get(_card(character_id))
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
        self, character_id: str, user_id: str, apply: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read, change with `apply`, write back; retried if another write came in between
        (optimistic WATCH), so concurrent updates never lose one another's changes."""
        key, used_key = _item(character_id), _bytes(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, used_key)
                    raw = await pipe.get(key)
                    current = self._owned_by(
                        json.loads(raw) if raw else None, character_id, user_id
                    )
                    updated = {**current, **apply(current), "updated_at": utc_now()}
                    record = json.dumps(updated, ensure_ascii=False)
                    growth = len(record.encode()) - len(raw.encode())
                    used = int(await pipe.get(used_key) or 0)
                    if growth > 0 and used + growth > self.max_bytes:
                        raise self._over_quota("bytes")
                    pipe.multi()
                    pipe.set(key, record)
                    pipe.incrby(used_key, growth)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def delete(self, character_id: str, user_id: str) -> None:
        await self.owned(character_id, user_id)
        keys = [_item(character_id), _card(character_id), _owned(user_id), _bytes(user_id)]
        await self._delete(keys=keys, args=[character_id])

    async def page_owned(
        self,
        user_id: str,
        after: PageKey | None,
        limit: int,
        select: Callable[[dict[str, Any]], T | None],
    ) -> Page[T, PageKey]:
        """A page of `limit` of the user's characters as `select` makes them of each record
        (None: left out), newest first, from just after `after`. Reads the owner set in
        batches (the first one the page's size and one more, each next one twice as large)
        until one more than the page is found, so a page costs about what it holds, not what
        the user has."""
        found: list[tuple[T, PageKey]] = []
        top, offset, size = ("+inf" if after is None else after[0]), 0, limit + 1
        while True:
            batch = await self.redis.zrevrangebyscore(
                _owned(user_id), top, "-inf", start=offset, num=size, withscores=True
            )
            offset += len(batch)
            # Ties with the cursor's score come first; those at or above its id were sent.
            fresh = [(i, s) for i, s in batch if after is None or (s, i) < after]
            raws = await self.redis.mget([_item(i) for i, _ in fresh]) if fresh else []
            for (character_id, score), raw in zip(fresh, raws, strict=True):
                if raw is None or (character := select(json.loads(raw))) is None:
                    continue  # deleted meanwhile, or filtered out
                found.append((character, (score, character_id)))
                if len(found) > limit:
                    return Page.of(found, limit)
            if len(batch) < size:
                return Page.of(found, limit)
            size = min(size * 2, MAX_BATCH)
