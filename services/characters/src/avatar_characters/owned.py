"""Records a user owns in Redis, under a count and a byte quota: the one piece user characters
(store.py) and user personas (personas/store.py) are both kept with.

Keys, under a namespace `ns` (`characters`, `personas`):
- `{ns}:item:{id}`: a record as JSON;
- `{ns}:{attachment}:{id}`: a large companion of the record kept apart, read only when asked
  for (characters: the raw card an import came from; personas have none);
- `{ns}:owner:{user_id}`: the user's ids scored by creation time (Unix seconds), so a listing
  is pages of this set, newest first;
- `{ns}:bytes:{user_id}`: the bytes the user's records and attachments take (deleted at 0).

Every write that changes sizes is one script or one WATCHed transaction, so the count and
byte quotas hold exactly under concurrent writes, and no write ever overwrites another's.
A user's keys are bounded by the quotas: at most `count` records and attachments, one set and
one counter.
"""

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from avatar_characters.errors import QuotaExceeded
from avatar_shared.errors import AppError
from avatar_shared.pages import Page
from avatar_shared.timestamps import utc_now

MAX_BATCH = 256  # most records read at once while a filtered listing fills its page

# KEYS: item, attachment, owner set, bytes. ARGV: record, attachment ('' for none), id, score,
# count quota, byte quota. Returns 'ok', 'collision', 'count' or 'bytes'.
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

# KEYS: item, attachment, owner set, bytes. ARGV: id. Gives the bytes back exactly once,
# however many deletes race.
DELETE = """
local size = redis.call('STRLEN', KEYS[1]) + redis.call('STRLEN', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('DECRBY', KEYS[4], size) <= 0 then redis.call('DEL', KEYS[4]) end
"""

PageKey = tuple[float, str]  # (creation score, id): where a page of a listing ends
T = TypeVar("T")


@dataclass(frozen=True)
class Quota:
    """What one user may keep of a kind of record: `count` records, `bytes` bytes (records
    and attachments); past either, a write raises `error` (409 quota_exceeded), naming the
    records as `noun` ("characters")."""

    count: int
    bytes: int
    noun: str
    error: type[QuotaExceeded] = QuotaExceeded

    def exceeded(self, which: str) -> QuotaExceeded:
        """The error of the quota `which` ('count' or 'bytes')."""
        if which == "count":
            return self.error(
                f"You have {self.count} {self.noun}, the most one user may keep; delete one first."
            )
        return self.error(
            f"Your {self.noun} would take more than {self.bytes} bytes, the most one user "
            "may keep; delete one first."
        )


@dataclass(frozen=True)
class Kind:
    """A kind of owned record: its key namespace, the prefix of its ids, what its attachment
    key is called, and the errors of an id that is not there or not the caller's."""

    namespace: str
    id_prefix: str
    not_found: Callable[[str], AppError]  # of the id asked for
    not_owner: Callable[[str], AppError]
    attachment: str = "attachment"


class OwnedRecords:
    def __init__(self, redis: Redis, kind: Kind, quota: Quota) -> None:
        self.redis, self.kind, self.quota = redis, kind, quota
        self._create = redis.register_script(CREATE)
        self._delete = redis.register_script(DELETE)

    def item_key(self, record_id: str) -> str:
        return f"{self.kind.namespace}:item:{record_id}"

    def attachment_key(self, record_id: str) -> str:
        return f"{self.kind.namespace}:{self.kind.attachment}:{record_id}"

    def owner_key(self, user_id: str) -> str:
        return f"{self.kind.namespace}:owner:{user_id}"

    def bytes_key(self, user_id: str) -> str:
        return f"{self.kind.namespace}:bytes:{user_id}"

    def _keys(self, record_id: str, user_id: str) -> list[str]:
        return [
            self.item_key(record_id),
            self.attachment_key(record_id),
            self.owner_key(user_id),
            self.bytes_key(user_id),
        ]

    async def create(
        self, user_id: str, fields: dict[str, Any], attachment: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Stores `fields` as a new record of the user's (with its id, owner and times), or
        raises the quota's error and stores nothing."""
        now = utc_now()
        record = {
            **fields,
            "id": self.kind.id_prefix + secrets.token_hex(8),
            "owner": user_id,
            "created_at": now,
            "updated_at": now,
        }
        raw = json.dumps(record, ensure_ascii=False)
        extra = "" if attachment is None else json.dumps(attachment, ensure_ascii=False)
        keys = self._keys(record["id"], user_id)
        args = [raw, extra, record["id"], time.time(), self.quota.count, self.quota.bytes]
        outcome = await self._create(keys=keys, args=args)
        if outcome == "collision":  # 64 random bits colliding: refuse rather than overwrite
            raise RuntimeError(f"{self.kind.namespace} id collision")
        if outcome != "ok":
            raise self.quota.exceeded(outcome)
        return record

    async def get(self, record_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.item_key(record_id))
        return json.loads(raw) if raw else None

    async def attachment_of(self, record_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.attachment_key(record_id))
        return json.loads(raw) if raw else None

    async def owned(self, record_id: str, user_id: str) -> dict[str, Any]:
        return self.owned_by(await self.get(record_id), record_id, user_id)

    def owned_by(
        self, record: dict[str, Any] | None, record_id: str, user_id: str
    ) -> dict[str, Any]:
        """`record` if it is there and the user's, else the kind's error."""
        if record is None:
            raise self.kind.not_found(record_id)
        if record["owner"] != user_id:
            raise self.kind.not_owner(record_id)
        return record

    async def update(
        self, record_id: str, user_id: str, apply: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read, change with `apply`, write back; retried if another write came in between
        (optimistic WATCH), so concurrent updates never lose one another's changes. A record
        that grows past the byte quota is the quota's error, and nothing changes."""
        key, used_key = self.item_key(record_id), self.bytes_key(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, used_key)
                    raw = await pipe.get(key)
                    current = self.owned_by(json.loads(raw) if raw else None, record_id, user_id)
                    updated = {**current, **apply(current), "updated_at": utc_now()}
                    record = json.dumps(updated, ensure_ascii=False)
                    growth = len(record.encode()) - len(raw.encode())
                    used = int(await pipe.get(used_key) or 0)
                    if growth > 0 and used + growth > self.quota.bytes:
                        raise self.quota.exceeded("bytes")
                    pipe.multi()
                    pipe.set(key, record)
                    pipe.incrby(used_key, growth)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def delete(self, record_id: str, user_id: str) -> None:
        await self.owned(record_id, user_id)
        await self._delete(keys=self._keys(record_id, user_id), args=[record_id])

    async def page_owned(
        self,
        user_id: str,
        after: PageKey | None,
        limit: int,
        select: Callable[[dict[str, Any]], T | None],
    ) -> Page[T, PageKey]:
        """A page of `limit` of the user's records as `select` makes them of each record
        (None: left out), newest first, from just after `after`. Reads the owner set in
        batches (the first one the page's size and one more, each next one twice as large)
        until one more than the page is found, so a page costs about what it holds, not what
        the user has."""
        found: list[tuple[T, PageKey]] = []
        top, offset, size = ("+inf" if after is None else after[0]), 0, limit + 1
        while True:
            batch = await self.redis.zrevrangebyscore(
                self.owner_key(user_id), top, "-inf", start=offset, num=size, withscores=True
            )
            offset += len(batch)
            # Ties with the cursor's score come first; those at or above its id were sent.
            fresh = [(i, s) for i, s in batch if after is None or (s, i) < after]
            raws = await self.redis.mget([self.item_key(i) for i, _ in fresh]) if fresh else []
            for (record_id, score), raw in zip(fresh, raws, strict=True):
                if raw is None or (item := select(json.loads(raw))) is None:
                    continue  # deleted meanwhile, or filtered out
                found.append((item, (score, record_id)))
                if len(found) > limit:
                    return Page.of(found, limit)
            if len(batch) < size:
                return Page.of(found, limit)
            size = min(size * 2, MAX_BATCH)
