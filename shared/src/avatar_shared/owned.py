"""Records a user owns in Redis, under count and byte quotas: the one piece user characters
and user personas (the characters service) and long-term memories (the chat service) are
all kept with.

Keys, under a namespace `ns` (`characters`, `personas`, `memories`):
- `{ns}:item:{id}`: a record as JSON;
- `{ns}:{attachment}:{id}`: a large companion of the record kept apart, read only when asked
  for (characters: the raw card an import came from; personas have none);
- `{ns}:owner:{user_id}`: the user's ids scored by creation time (Unix seconds), so a listing
  is pages of this set, newest first;
- `{ns}:bytes:{user_id}`: the bytes the user's records and attachments take (deleted at 0);
- `{ns}:address-of:{user_id}`: for an anonymous user, the client address (`addr:…`) their
  records count against: the one they first stored from, so moving neither frees that
  address's budget nor escapes it;
- `{ns}:address:{address}`: the anonymous users whose records count against that address;
- `{ns}:renewed:{user_id}`: an anonymous user's keys were renewed within the hour.

Anonymous ids cost nothing, so an anonymous user keeps less than a signed-in one (its own
quotas), every anonymous user of one client address together keeps at most the address's
quotas, and what they keep expires: every key of theirs (and of the kind's `extra_keys`)
expires at one moment, ANON_DATA_TTL_S plus up to RENEW_EVERY_S after their last use. A
write renews them all; a read does when they were not renewed in the last RENEW_EVERY_S (a
marker key), so a read costs one cheap script call. Signed-in users' keys are kept. When
an anonymous user signs in, their records move to the account (`adopt`, one script per
record, under the account's quotas; avatar_shared.adoption); what does not fit stays theirs.

Every kind also holds its share of the data store (avatar_shared.budget): a write that would
pass it is 503 storage_full, and the owner's holding there is their byte counter (anonymous
ones with their expiry, so expired data gives its bytes back).

Every write that changes sizes is one script, so the quotas and the budget hold exactly under
concurrent writes, and no write ever overwrites another's (an update is a compare-and-set).
The scripts name an owner's keys themselves (a record's keys are only known from the owner's
set): one Redis server, as everywhere in this project, not a cluster.
"""

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError
from redis.typing import EncodableT

from avatar_shared.adoption import KindMoved
from avatar_shared.budget import BUDGET_FUNCTIONS, Budget
from avatar_shared.changes import announce
from avatar_shared.errors import AppError, PreconditionFailed, ValidationFailed
from avatar_shared.identity import ANON_PREFIX
from avatar_shared.pages import Page
from avatar_shared.timestamps import utc_now

MAX_BATCH = 256  # most records read at once while a filtered listing fills its page
RENEW_EVERY_S = 3600  # a read renews an anonymous user's keys at most this often

# What every write script starts with. KEYS: the kind's budget (total, held, until).
# ARGV: ns, attachment, extra owner keys (space-separated), the user id, the client address
# key of an anonymous user ('' for a signed-in one), the data's lifetime (s), the renewal
# period (s), the budget's limit; then each script's own.
OWNED_FUNCTIONS = (
    BUDGET_FUNCTIONS
    + """
local ns, att, holder, address = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local anonymous = address ~= ''
local owner_key, bytes_key = ns .. ':owner:' .. holder, ns .. ':bytes:' .. holder
local pin_key, marker_key = ns .. ':address-of:' .. holder, ns .. ':renewed:' .. holder
local now = tonumber(redis.call('TIME')[1])
local expires_at = now + tonumber(ARGV[6])
local expires = anonymous and expires_at or 'inf'
local limit = tonumber(ARGV[8])
local function item_key(id) return ns .. ':item:' .. id end
local function attachment_key(id) return ns .. ':' .. att .. ':' .. id end
local function address_key(at) return ns .. ':address:' .. at end
local function counted(key) return tonumber(redis.call('GET', key) or '0') end

-- Records made before byte counters existed have none: counted from the records, once.
local function seed_of(owner, bytes)
  if redis.call('EXISTS', bytes) == 1 then return end
  local size = 0
  for _, id in ipairs(redis.call('ZRANGE', owner, 0, -1)) do
    size = size + redis.call('STRLEN', item_key(id)) + redis.call('STRLEN', attachment_key(id))
  end
  if size > 0 then redis.call('SET', bytes, size) end
end
local function seed() seed_of(owner_key, bytes_key) end

-- The budget holds what the owner's counter says: nothing for data that expired before a
-- sweep gave it back, all of it for records made before the budget.
local function reconcile()
  local held = tonumber(redis.call('HGET', KEYS[2], holder) or '0')
  local size = counted(bytes_key)
  if held ~= size then budget_hold(KEYS[1], KEYS[2], KEYS[3], holder, size - held, expires) end
end

-- The records and bytes every anonymous user of address `at` keeps; users with no records
-- left (deleted or expired) leave its set. The writer's own records count even before the
-- writer joins the set.
local function address_usage(at)
  local count, size, mine = 0, 0, false
  for _, user in ipairs(redis.call('SMEMBERS', address_key(at))) do
    local records = redis.call('ZCARD', ns .. ':owner:' .. user)
    if records == 0 then
      redis.call('SREM', address_key(at), user)
    else
      count, size = count + records, size + counted(ns .. ':bytes:' .. user)
      mine = mine or user == holder
    end
  end
  if not mine then
    count, size = count + redis.call('ZCARD', owner_key), size + counted(bytes_key)
  end
  return count, size
end

-- The address an anonymous writer's records count against: theirs from before, else this one.
local function address_of() return redis.call('GET', pin_key) or address end

local function join(at)
  redis.call('SET', pin_key, at)
  redis.call('SADD', address_key(at), holder)
end

-- Every key of an anonymous owner expires at one moment, as does their holding in the
-- budget; their address's set expires last (with one lifetime, the latest renewal is the
-- latest expiry).
local function renew()
  for _, id in ipairs(redis.call('ZRANGE', owner_key, 0, -1)) do
    redis.call('EXPIREAT', item_key(id), expires_at)
    redis.call('EXPIREAT', attachment_key(id), expires_at)
  end
  for extra in string.gmatch(ARGV[3], '%S+') do
    redis.call('EXPIREAT', ns .. ':' .. extra .. ':' .. holder, expires_at)
  end
  for _, key in ipairs({owner_key, bytes_key, pin_key}) do
    redis.call('EXPIREAT', key, expires_at)
  end
  local at = redis.call('GET', pin_key)
  if at then redis.call('EXPIREAT', address_key(at), expires_at) end
  redis.call('ZADD', KEYS[3], 'XX', expires_at, holder)
  redis.call('SET', marker_key, '1', 'EX', ARGV[7])
end
"""
)

# ARGV after the common ones: record, attachment ('' for none), id, score, count quota,
# byte quota, the address's count quota, the address's byte quota.
# Returns 'ok', 'collision', 'count', 'bytes', 'address_count', 'address_bytes' or 'full'.
CREATE = (
    OWNED_FUNCTIONS
    + """
local record, attachment, id = ARGV[9], ARGV[10], ARGV[11]
if redis.call('EXISTS', item_key(id)) == 1 then return 'collision' end
seed()
budget_sweep(KEYS[1], KEYS[2], KEYS[3], now)
reconcile()
if redis.call('ZCARD', owner_key) >= tonumber(ARGV[13]) then return 'count' end
local size = #record + #attachment
if counted(bytes_key) + size > tonumber(ARGV[14]) then return 'bytes' end
local at = anonymous and address_of() or ''
if anonymous then
  local count, used = address_usage(at)
  if count >= tonumber(ARGV[15]) then return 'address_count' end
  if used + size > tonumber(ARGV[16]) then return 'address_bytes' end
end
if not budget_fits(KEYS[1], size, limit) then return 'full' end
redis.call('SET', item_key(id), record)
if #attachment > 0 then redis.call('SET', attachment_key(id), attachment) end
redis.call('ZADD', owner_key, ARGV[12], id)
redis.call('INCRBY', bytes_key, size)
budget_hold(KEYS[1], KEYS[2], KEYS[3], holder, size, expires)
if anonymous then
  join(at)
  renew()
end
return 'ok'
"""
)

# ARGV after the common ones: the SHA-1 of the record as read, the changed record, its id,
# the byte quota, the address's byte quota. Written only if the record is still as read,
# else 'changed' (read again and retry); 'ok', 'bytes', 'address_bytes' or 'full'.
UPDATE = (
    OWNED_FUNCTIONS
    + """
local record, id = ARGV[10], ARGV[11]
local current = redis.call('GET', item_key(id))
if not current or redis.sha1hex(current) ~= ARGV[9] then return 'changed' end
seed()
budget_sweep(KEYS[1], KEYS[2], KEYS[3], now)
reconcile()
local growth = #record - #current
local at = anonymous and address_of() or ''
if growth > 0 then
  if counted(bytes_key) + growth > tonumber(ARGV[12]) then return 'bytes' end
  if anonymous then
    local _, used = address_usage(at)
    if used + growth > tonumber(ARGV[13]) then return 'address_bytes' end
  end
  if not budget_fits(KEYS[1], growth, limit) then return 'full' end
end
redis.call('SET', item_key(id), record, 'KEEPTTL')
if redis.call('INCRBY', bytes_key, growth) <= 0 then redis.call('DEL', bytes_key) end
reconcile()
if anonymous then
  join(at)
  renew()
end
return 'ok'
"""
)

# ARGV after the common ones: the id, and the SHA-1 of the record as read when the caller
# asked for that version ('' for any). Gives the bytes back exactly once, however many
# deletes race. Returns 'ok'; 'changed' (not that version any more: read again); or 'gone'
# when the record is not the caller's any more (a sign-in moved it, or another delete came
# first, since the caller's check of the owner).
DELETE = (
    OWNED_FUNCTIONS
    + """
local id = ARGV[9]
if not redis.call('ZSCORE', owner_key, id) then return 'gone' end
if ARGV[10] ~= '' and redis.sha1hex(redis.call('GET', item_key(id)) or '') ~= ARGV[10] then
  return 'changed'
end
seed()
local size = redis.call('STRLEN', item_key(id)) + redis.call('STRLEN', attachment_key(id))
redis.call('DEL', item_key(id), attachment_key(id))
redis.call('ZREM', owner_key, id)
if redis.call('DECRBY', bytes_key, size) <= 0 then redis.call('DEL', bytes_key) end
budget_sweep(KEYS[1], KEYS[2], KEYS[3], now)
reconcile()
if anonymous then renew() end
return 'ok'
"""
)

# A read of an anonymous owner's records: renews their keys unless done within the period.
# No marker for an owner with no records (a visitor who only looks stores nothing).
RENEW = (
    OWNED_FUNCTIONS
    + """
if redis.call('EXISTS', marker_key) == 1 or redis.call('EXISTS', owner_key) == 0 then
  return 0
end
renew()
return 1
"""
)

# Moves one record of an anonymous user's to a signed-in one (the common ARGV are the
# account's, so `holder` is the account and `expires` is 'inf'), at sign-in
# (avatar_shared.adoption). ARGV after the common ones: the anonymous id, the record's id, the
# SHA-1 of the record as read, the record with its new owner, the account's count quota, its
# byte quota. Returns 'ok'; 'gone' (not the anonymous user's any more: moved already, or
# deleted); 'changed' (read again and retry); or 'count', 'bytes', 'full' (it stays theirs).
ADOPT = (
    OWNED_FUNCTIONS
    + """
local from, id, read_as, record = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local from_owner, from_bytes = ns .. ':owner:' .. from, ns .. ':bytes:' .. from
local score = redis.call('ZSCORE', from_owner, id)
local current = redis.call('GET', item_key(id))
if not score or not current then return 'gone' end
if redis.sha1hex(current) ~= read_as then return 'changed' end
seed()
seed_of(from_owner, from_bytes)
budget_sweep(KEYS[1], KEYS[2], KEYS[3], now)
reconcile()
local attached = redis.call('STRLEN', attachment_key(id))
local old_size, size = #current + attached, #record + attached
if redis.call('ZCARD', owner_key) >= tonumber(ARGV[13]) then return 'count' end
if counted(bytes_key) + size > tonumber(ARGV[14]) then return 'bytes' end
if not budget_fits(KEYS[1], size - old_size, limit) then return 'full' end
-- A SET without KEEPTTL drops the record's expiry, as PERSIST does its attachment's: an
-- account's records are kept until deleted. Its creation score goes with it (listing order).
redis.call('SET', item_key(id), record)
redis.call('PERSIST', attachment_key(id))
redis.call('ZREM', from_owner, id)
redis.call('ZADD', owner_key, score, id)
redis.call('INCRBY', bytes_key, size)
if redis.call('DECRBY', from_bytes, old_size) <= 0 then redis.call('DEL', from_bytes) end
-- The bytes change holders in the kind's budget: the anonymous user's holding (and its
-- expiry) shrinks, the account's grows and is kept.
budget_hold(KEYS[1], KEYS[2], KEYS[3], from, -old_size, 'inf')
budget_hold(KEYS[1], KEYS[2], KEYS[3], holder, size, expires)
return 'ok'
"""
)
# What an adoption's script answers for a record that stays the anonymous user's.
DOES_NOT_FIT = frozenset({"count", "bytes", "full"})

PageKey = tuple[float, str]  # (creation score, id): where a page of a listing ends
T = TypeVar("T")


@dataclass(frozen=True)
class Owner:
    """Whose records: the user, and for an anonymous one the key of their client address
    (`Caller.address_key`; None for a signed-in user)."""

    user_id: str
    address: str | None = None


@dataclass(frozen=True)
class Quota:
    count: int
    bytes: int


class NotUnicode(ValidationFailed):
    message = "The text holds a lone UTF-16 surrogate (half of a pair), which is not Unicode."


@dataclass(frozen=True)
class Quotas:
    """What may be kept of a kind of record: by one signed-in user, by one anonymous user, and
    by every anonymous user of one client address together; past one, a write raises `error`
    (409 quota_exceeded), naming the records as `noun` ("characters")."""

    signed_in: Quota
    anonymous: Quota
    address: Quota
    noun: str
    error: type[AppError]  # 409 quota_exceeded, in the kind's words

    def of(self, owner: Owner) -> Quota:
        return self.signed_in if owner.address is None else self.anonymous

    def exceeded(self, which: str, owner: Owner) -> AppError:
        """The error of the quota `which` (a script's answer) for `owner`."""
        noun, together = self.noun, "the most they may; sign in to keep more, or delete one first."
        if which == "address_count":
            return self.error(
                f"Anonymous users from your network address keep {self.address.count} {noun} "
                f"together, {together}"
            )
        if which == "address_bytes":
            return self.error(
                "Anonymous users from your network address would keep more than "
                f"{self.address.bytes} bytes of {noun} together, {together}"
            )
        quota = self.of(owner)
        who, then = "one user", "delete one first."
        if owner.address is not None:
            who, then = "an anonymous user", "sign in to keep more, or delete one first."
        if which == "count":
            return self.error(f"You have {quota.count} {noun}, the most {who} may keep; {then}")
        return self.error(
            f"Your {noun} would take more than {quota.bytes} bytes, the most {who} may keep; "
            + then
        )


@dataclass(frozen=True)
class Kind:
    """A kind of owned record: its key namespace, the prefix of its ids, what its attachment
    key is called, the owner's other keys of the kind (`{ns}:{extra}:{user_id}`, expiring with
    their records), the errors of an id that is not there or not the caller's, and the channel
    a record's id is announced on when it changes, is deleted or moves (avatar_shared.changes;
    None: no one caches the kind elsewhere)."""

    namespace: str
    id_prefix: str
    not_found: Callable[[str], AppError]  # of the id asked for
    not_owner: Callable[[str], AppError]
    attachment: str = "attachment"
    extra_keys: tuple[str, ...] = ()
    changes: str | None = None


def encoded(record: dict[str, Any]) -> str:
    """`record` as stored: JSON text that must encode as UTF-8 (JSON may carry a lone
    surrogate, `\\ud800`, where a free-form object takes anything)."""
    raw = json.dumps(record, ensure_ascii=False)
    try:
        raw.encode()
    except UnicodeEncodeError as exc:
        raise NotUnicode() from exc
    return raw


def version_of(raw: str) -> str:
    """The version of a record stored as `raw` (its ETag): the SHA-1 the scripts compare."""
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def check_version(raw: str, expected: Collection[str] | None) -> str:
    """The version of `raw`, if it is one of `expected` (None: any), else 412."""
    version = version_of(raw)
    if expected is not None and version not in expected:
        raise PreconditionFailed()
    return version


class OwnedRecords:
    def __init__(
        self, redis: Redis, kind: Kind, quotas: Quotas, budget: Budget, anon_data_ttl_s: int
    ) -> None:
        self.redis, self.kind, self.quotas, self.budget = redis, kind, quotas, budget
        # Renewed at most every RENEW_EVERY_S, so kept that much longer: at least the TTL
        # after the last use.
        self.data_lifetime_s = anon_data_ttl_s + RENEW_EVERY_S
        self._create = redis.register_script(CREATE)
        self._update = redis.register_script(UPDATE)
        self._delete = redis.register_script(DELETE)
        self._renew = redis.register_script(RENEW)
        self._adopt = redis.register_script(ADOPT)

    def item_key(self, record_id: str) -> str:
        return f"{self.kind.namespace}:item:{record_id}"

    def attachment_key(self, record_id: str) -> str:
        return f"{self.kind.namespace}:{self.kind.attachment}:{record_id}"

    def owner_key(self, user_id: str) -> str:
        return f"{self.kind.namespace}:owner:{user_id}"

    def bytes_key(self, user_id: str) -> str:
        return f"{self.kind.namespace}:bytes:{user_id}"

    def _common(self, owner: Owner) -> list[EncodableT]:
        """The ARGV every script starts with (OWNED_FUNCTIONS)."""
        return [
            self.kind.namespace,
            self.kind.attachment,
            " ".join(self.kind.extra_keys),
            owner.user_id,
            owner.address or "",
            self.data_lifetime_s,
            RENEW_EVERY_S,
            self.budget.limit,
        ]

    def _refusal(self, outcome: str, owner: Owner) -> AppError:
        return self.budget.full() if outcome == "full" else self.quotas.exceeded(outcome, owner)

    async def create(
        self, owner: Owner, fields: dict[str, Any], attachment: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Stores `fields` as a new record of the owner's (with its id, owner and times), or
        raises the quota's (or the budget's) error and stores nothing."""
        now = utc_now()
        record = {
            **fields,
            "id": self.kind.id_prefix + secrets.token_hex(8),
            "owner": owner.user_id,
            "created_at": now,
            "updated_at": now,
        }
        raw = encoded(record)
        extra = "" if attachment is None else encoded(attachment)
        quota, address = self.quotas.of(owner), self.quotas.address
        args = [
            *self._common(owner),
            *(raw, extra, record["id"], time.time(), quota.count, quota.bytes),
            *(address.count, address.bytes),
        ]
        outcome = await self._create(keys=self.budget.keys, args=args)
        if outcome == "collision":  # 64 random bits colliding: refuse rather than overwrite
            raise RuntimeError(f"{self.kind.namespace} id collision")
        if outcome != "ok":
            raise self._refusal(outcome, owner)
        return record

    async def get(self, record_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.item_key(record_id))
        return json.loads(raw) if raw else None

    async def get_versioned(self, record_id: str) -> tuple[dict[str, Any], str] | None:
        """The record and its version (`version_of`), for an ETag."""
        raw = await self.redis.get(self.item_key(record_id))
        return (json.loads(raw), version_of(raw)) if raw else None

    @staticmethod
    def version(record: dict[str, Any]) -> str:
        """The version of `record` as `update` stored it."""
        return version_of(encoded(record))

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
        self,
        record_id: str,
        owner: Owner,
        apply: Callable[[dict[str, Any]], dict[str, Any]],
        expected: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Read, change with `apply`, write back if no other write came in between (else read
        again), so concurrent updates never lose one another's changes. A record that grows
        past a quota or the budget is its error, and nothing changes. `expected`: the
        versions the caller read (If-Match); another one is 412 and nothing changes."""
        quota, address = self.quotas.of(owner), self.quotas.address
        while True:
            raw = await self.redis.get(self.item_key(record_id))
            current = self.owned_by(json.loads(raw) if raw else None, record_id, owner.user_id)
            read_as = check_version(raw, expected)
            updated = {**current, **apply(current), "updated_at": utc_now()}
            args = [
                *self._common(owner),
                *(read_as, encoded(updated), record_id, quota.bytes, address.bytes),
            ]
            outcome = await self._update(keys=self.budget.keys, args=args)
            if outcome == "ok":
                await self._announce(record_id)
                return updated
            if outcome != "changed":
                raise self._refusal(outcome, owner)

    async def delete(
        self, record_id: str, owner: Owner, expected: Collection[str] | None = None
    ) -> None:
        """Deletes the owner's record; `expected` as for `update`."""
        while True:
            read_as = ""
            if expected is None:
                await self.owned(record_id, owner.user_id)
            else:
                raw = await self.redis.get(self.item_key(record_id))
                self.owned_by(json.loads(raw) if raw else None, record_id, owner.user_id)
                read_as = check_version(raw, expected)
            args = [*self._common(owner), record_id, read_as]
            outcome = await self._delete(keys=self.budget.keys, args=args)
            if outcome == "gone":
                raise self.kind.not_found(record_id)  # gone from the caller since the check
            if outcome == "ok":
                break
        await self._announce(record_id)

    async def adopt(self, from_id: str, to_id: str) -> KindMoved:
        """Moves the anonymous user `from_id`'s records to the signed-in user `to_id`, oldest
        first, each in one script (see ADOPT): what passes the account's quotas or the kind's
        budget stays the anonymous user's, with its expiry. A record moved (or deleted) by a
        call racing this one is counted by neither."""
        moved = kept = 0
        # Bounded by the anonymous quotas (MAX_..._PER_ANONYMOUS_USER records).
        for record_id in await self.redis.zrange(self.owner_key(from_id), 0, -1):
            outcome = await self._adopt_one(record_id, from_id, to_id)
            moved += outcome == "ok"
            kept += outcome in DOES_NOT_FIT
        return KindMoved(moved=moved, kept=kept)

    async def _adopt_one(self, record_id: str, from_id: str, to_id: str) -> str:
        quota = self.quotas.signed_in
        while True:  # until no write came in between the read and the move
            raw = await self.redis.get(self.item_key(record_id))
            record = json.loads(raw) if raw else None
            if record is None or record["owner"] != from_id:
                return "gone"
            # updated_at stays: the record's content is as its maker left it.
            moved = encoded({**record, "owner": to_id})
            read_as = version_of(raw)
            args = [
                *self._common(Owner(to_id)),
                *(from_id, record_id, read_as, moved, quota.count, quota.bytes),
            ]
            outcome = str(await self._adopt(keys=self.budget.keys, args=args))
            if outcome == "ok":
                await self._announce(record_id)  # its owner is another
            if outcome != "changed":
                return outcome

    async def _announce(self, record_id: str) -> None:
        if self.kind.changes is not None:
            await announce(self.redis, self.kind.changes, record_id)

    async def renew(self, user_id: str) -> None:
        """Called on a read of the user's records: an anonymous user's keep living (see the
        module's docstring). A full Redis does not fail the read."""
        if not user_id.startswith(ANON_PREFIX):
            return
        try:
            await self._renew(keys=self.budget.keys, args=self._common(Owner(user_id)))
        except OutOfMemoryError:
            pass  # renewed by a later use

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
        the user has. Every batch starts where the last one ended by its position (score and
        id), never by an offset: a record created or deleted meanwhile neither repeats one
        nor skips one."""
        found: list[tuple[T, PageKey]] = []
        position, size = after, limit + 1
        # Records at `position`'s score read already (they come first in a batch read from
        # that score): the batch reads that many more, so ties never hold it in place.
        seen_ties = 0
        while True:
            top = "+inf" if position is None else position[0]
            wanted = size + seen_ties
            batch = await self.redis.zrevrangebyscore(
                self.owner_key(user_id), top, "-inf", start=0, num=wanted, withscores=True
            )
            # Ties with the position's score come first; those at or above its id were read.
            fresh = [(i, s) for i, s in batch if position is None or (s, i) < position]
            raws = await self.redis.mget([self.item_key(i) for i, _ in fresh]) if fresh else []
            for (record_id, score), raw in zip(fresh, raws, strict=True):
                if raw is None or (item := select(json.loads(raw))) is None:
                    continue  # deleted meanwhile, or filtered out
                found.append((item, (score, record_id)))
                if len(found) > limit:
                    return Page.of(found, limit)
            if len(batch) < wanted:
                return Page.of(found, limit)
            if fresh:
                position = (fresh[-1][1], fresh[-1][0])
            at = position
            seen_ties = sum(1 for i, s in batch if at and s == at[0] and (s, i) >= at)
            size = min(size * 2, MAX_BATCH)
