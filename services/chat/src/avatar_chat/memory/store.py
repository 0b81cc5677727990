"""Long-term memories in Redis: owned records (avatar_shared.owned, the piece characters and
personas are kept with) under the `memories` namespace, with the same quotas per signed-in
user, anonymous user and client address, the same expiry of an anonymous user's, and the
same move to the account at sign-in.

Keys:
- `memories:item:{id}`: a memory as JSON: character_id, text, pinned, source (`user`,
  `learned`), kind, key (the slot a learned fact fills), where it was learned (session_id,
  message_id, root: the conversation's first ancestor, covered: how many of its messages had
  been read, digest: exactly which, as `context.summaries.prefix_digests` has it), history
  (its earlier texts), owner and times;
- `memories:owner:{user_id}`, `memories:bytes:{user_id}` and an anonymous user's address
  keys (avatar_shared.owned);
- `memories:pinning:{user_id}:{character_id}`: the lock one pin holds while it checks the
  bound of pinned memories and writes (it expires: a replica that dies holding it holds it no
  longer);
- `memories:version:{user_id}`: a token that changes with every write of the user's
  memories, so a replica reuses what it read of them (and the index it ranks them with) until
  it changes: a turn costs one GET, not a read of every memory. It expires with an anonymous
  user's memories.
"""

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError

from avatar_chat.memory.errors import MemoryNotFound, MemoryQuotaExceeded
from avatar_chat.memory.ranking import MemoryIndex
from avatar_chat.memory.schemas import ID_PREFIX
from avatar_chat.settings import ChatSettings
from avatar_shared.adoption import KindMoved
from avatar_shared.budget import Budget
from avatar_shared.errors import PreconditionFailed, RedisUnavailable
from avatar_shared.owned import (
    Kind,
    OwnedRecords,
    Owner,
    PageKey,
    Quota,
    Quotas,
    version_of,
)
from avatar_shared.pages import Page
from avatar_shared.timestamps import utc_now

MEMORIES = Kind(
    namespace="memories",
    id_prefix=ID_PREFIX,
    not_found=MemoryNotFound,
    not_owner=MemoryNotFound,  # not confirmed to others: the same 404 as a missing one
    extra_keys=("version",),
)
HISTORY_KEPT = 5  # earlier texts a memory keeps
# What a replica keeps read (and indexed): at most this many memories, of the (user,
# character) pairs used last. An index of 2,000 long memories takes some megabytes.
RECALLED_MEMORIES = 20_000
PIN_LOCK_S = 5.0  # the longest one pin holds its lock (a check and a write: milliseconds)


@dataclass(frozen=True)
class Origin:
    """Where a learned fact was read: the conversation, its last message read, and exactly
    which messages those were."""

    session_id: str
    message_id: str | None
    root: str  # the conversation's first ancestor (itself, unless it is a branch)
    covered: int
    digest: str


@dataclass  # not frozen: `ranking.Rankable` asks for plain attributes
class Remembered:
    """A memory as a prompt and the learning use it."""

    id: str
    text: str
    pinned: bool
    at: str  # last written: newer wins ties in ranking
    source: str
    key: str | None = None
    origin: Origin | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> "Remembered":
        return cls(
            record["id"],
            record["text"],
            bool(record.get("pinned")),
            record["updated_at"],
            record.get("source", "user"),
            record.get("key"),
            origin_of(record),
        )


def origin_of(fields: dict[str, Any]) -> Origin | None:
    """Where a record (or an earlier text in its history) was learned; None: not learned, or
    kept before history remembered it."""
    if not fields.get("session_id"):
        return None
    return Origin(
        fields["session_id"],
        fields.get("message_id"),
        fields.get("root") or fields["session_id"],
        int(fields.get("covered", 0)),
        str(fields.get("digest", "")),
    )


@dataclass(frozen=True)
class Recalled:
    """One user's memories of one character, as read at one version, and their index."""

    memories: list[Remembered]
    index: MemoryIndex[Remembered] = field(repr=False)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored memory as the API shows it."""
    return {
        "id": record["id"],
        "character_id": record["character_id"],
        "text": record["text"],
        "pinned": bool(record.get("pinned")),
        "source": record.get("source", "user"),
        "kind": record.get("kind", "other"),
        "key": record.get("key"),
        "session_id": record.get("session_id"),
        "message_id": record.get("message_id"),
        "history": record.get("history", []),
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
    }


def with_text(record: dict[str, Any], text: str, learned_in: str | None = None) -> dict[str, Any]:
    """The fields that give `record` a new text, the old one kept in its history; `learned_in`:
    the conversation a learned new text comes from (the old one is kept with where it was
    learned, which an edit of that conversation may bring back)."""
    if text == record["text"]:
        return {}
    replaced: dict[str, Any] = {"text": record["text"], "until": utc_now()}
    if learned_in is not None and (earlier := origin_of(record)) is not None:
        replaced["origin"] = _origin_fields(earlier)
    return {"text": text, "history": _bounded([*record.get("history", []), replaced], learned_in)}


def _bounded(history: list[dict[str, Any]], learned_in: str | None) -> list[dict[str, Any]]:
    """The last HISTORY_KEPT earlier texts, but first those undoing edits goes back to: the
    newest not learned in `learned_in`, the newest before it not learned in its conversation,
    and so on (a conversation that corrects a slot many times must not push out what another
    taught: an edit of its messages would then delete the memory, not bring that back)."""
    if learned_in is None or len(history) <= HISTORY_KEPT:
        return history[-HISTORY_KEPT:]
    kept, current = set[int](), learned_in
    for at in range(len(history) - 1, -1, -1):
        source = origin_of(history[at].get("origin") or {})
        if source is None or source.session_id != current:
            kept.add(at)
            if source is None or len(kept) == HISTORY_KEPT:
                break  # undoing stops at a text learned nowhere in particular
            current = source.session_id
    newest = (at for at in range(len(history) - 1, -1, -1) if at not in kept)
    while len(kept) < HISTORY_KEPT:
        kept.add(next(newest))
    return [entry for at, entry in enumerate(history) if at in kept]


class MemoryStore:
    def __init__(self, redis: Redis, settings: ChatSettings) -> None:
        self.redis = redis
        quotas = Quotas(
            signed_in=Quota(settings.max_memories_per_user, settings.max_memory_bytes_per_user),
            anonymous=Quota(
                settings.max_memories_per_anonymous_user,
                settings.max_memory_bytes_per_anonymous_user,
            ),
            address=Quota(settings.max_memories_per_address, settings.max_memory_bytes_per_address),
            noun="memories",
            error=MemoryQuotaExceeded,
        )
        budget = Budget(redis, "memories", settings.redis_maxmemory_bytes)
        self.records = OwnedRecords(redis, MEMORIES, quotas, budget, settings.anon_data_ttl_s)
        self._recalled: OrderedDict[tuple[str, str], tuple[str, Recalled]] = OrderedDict()
        self.max_pinned = settings.max_pinned_memories

    @staticmethod
    def version_key(user_id: str) -> str:
        return f"memories:version:{user_id}"

    # --- writes --------------------------------------------------------------------------

    async def create(
        self,
        owner: Owner,
        character_id: str,
        text: str,
        pinned: bool = False,
        learned: tuple[str, str | None, Origin] | None = None,
    ) -> dict[str, Any]:
        """A new memory; `learned`: its kind, key and origin (else the user wrote it)."""
        fields: dict[str, Any] = {
            "character_id": character_id,
            "text": text,
            "pinned": pinned,
            "source": "user",
            "kind": "other",
            "key": None,
            "history": [],
        }
        if learned is not None:
            kind, key, origin = learned
            fields |= {"source": "learned", "kind": kind, "key": key, **_origin_fields(origin)}
        record = await self.records.create(owner, fields)
        await self._changed(owner)
        return record

    async def change(
        self, memory_id: str, owner: Owner, text: str | None, pinned: bool | None
    ) -> dict[str, Any]:
        """The user's edit: a new text (the old one kept in its history), pinned or not. A
        learned memory the user changed is theirs from then on (`source` user): learning
        never replaces nor forgets it."""

        def apply(record: dict[str, Any]) -> dict[str, Any]:
            changes = with_text(record, text) if text is not None else {}
            if pinned is not None:
                changes["pinned"] = pinned
            return {**changes, "source": "user", "key": None}  # no slot a fact may take

        record = await self.records.update(memory_id, owner, apply)
        await self._changed(owner)
        return record

    async def relearn(self, memory_id: str, owner: Owner, text: str, origin: Origin) -> bool:
        """A learned fact said anew for its slot: its new text and where it was learned (the
        older text kept in its history with where that was learned, which an edit of this
        conversation may bring back). False (nothing written) when the user took the memory
        over meanwhile: checked in the write itself, so a user's edit is never overwritten."""

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            if current.get("source") != "learned":
                raise _TakenOver()
            return {**with_text(current, text, origin.session_id), **_origin_fields(origin)}

        try:
            await self.records.update(memory_id, owner, apply)
        except (_TakenOver, MemoryNotFound):
            return False
        await self._changed(owner)
        return True

    async def delete(self, memory_id: str, owner: Owner) -> None:
        await self.records.delete(memory_id, owner)
        await self._changed(owner)

    async def forget(
        self, memory_ids: list[str], owner: Owner, gone: Callable[[Origin], bool]
    ) -> None:
        """Forgets what the owner's learned memories took from messages that are `gone` (edited
        away): each goes back to its latest earlier text not learned from them (another
        conversation's, say), else is deleted. One the user took over meanwhile is left (checked
        in the write itself)."""
        for memory_id in memory_ids:
            try:
                await self.records.update(memory_id, owner, lambda r: _reverted(r, gone))
            except (_TakenOver, MemoryNotFound):
                continue
            except _NothingEarlier:
                await self._delete_learned(memory_id, owner)
        if memory_ids:
            await self._changed(owner)

    async def _delete_learned(self, memory_id: str, owner: Owner) -> None:
        """Deletes the memory if it is still a learned one of the owner's: deleted only as
        read (a user's edit in between makes it theirs, kept)."""
        while True:
            raw = await self.redis.get(self.records.item_key(memory_id))
            record = _readable(raw)
            if (
                raw is None
                or record is None
                or record.get("owner") != owner.user_id
                or record.get("source") != "learned"
            ):
                return
            try:
                await self.records.delete(memory_id, owner, expected=[version_of(raw)])
                return
            except PreconditionFailed:
                continue  # written in between: looked at again
            except MemoryNotFound:
                return

    async def adopt(self, from_id: str, to_id: str) -> KindMoved:
        """Moves an anonymous user's memories to the account at sign-in; those pinned past
        the account's bound of pins (MAX_PINNED_MEMORIES a character) move unpinned."""
        brought = set(await self.redis.zrange(self.records.owner_key(from_id), 0, -1))
        moved = await self.records.adopt(from_id, to_id)
        await self._changed(Owner(to_id))
        await self._changed(Owner(from_id), anonymous=True)
        if brought:
            await self._unpin_past_bound(Owner(to_id), brought)
        return moved

    async def _unpin_past_bound(self, owner: Owner, brought: set[str]) -> None:
        """Unpins the `brought` memories past the bound of pins of their character: the
        account's own pins first, then the newest brought ones."""
        characters = {
            m["character_id"] for m in await self._every(owner.user_id) if m.get("pinned")
        }
        for character_id in characters:
            async with self.pinning(owner.user_id, character_id):  # as a pin's check is
                pinned = [
                    r for r in await self._all(owner.user_id, character_id) if r.get("pinned")
                ]
                if len(pinned) <= self.max_pinned:
                    continue
                newest_brought = sorted(
                    (r for r in pinned if r["id"] in brought),
                    key=lambda r: r["updated_at"],
                    reverse=True,
                )
                room = max(self.max_pinned - (len(pinned) - len(newest_brought)), 0)
                for record in newest_brought[room:]:
                    with suppress(MemoryNotFound):  # deleted meanwhile
                        await self.records.update(record["id"], owner, lambda _: {"pinned": False})
            await self._changed(owner)

    @asynccontextmanager
    async def pinning(self, user_id: str, character_id: str) -> AsyncIterator[None]:
        """One pin at a time of the user's memories of the character, across replicas: the
        check of the bound and the write it allows are one step."""
        key = f"memories:pinning:{user_id}:{character_id}"
        lock = self.redis.lock(key, timeout=PIN_LOCK_S, blocking_timeout=PIN_LOCK_S + 1)
        if not await lock.acquire():  # held past its expiry: only a stalled store does that
            raise RedisUnavailable()
        try:
            yield
        finally:
            with suppress(LockError):  # expired meanwhile: nothing of ours to release
                await lock.release()

    async def _changed(self, owner: Owner, anonymous: bool = False) -> None:
        """A new version: every replica reads the user's memories afresh (an anonymous
        user's version expires with their memories)."""
        key, token = self.version_key(owner.user_id), secrets.token_hex(8)
        if owner.address is None and not anonymous:
            await self.redis.set(key, token)
        else:
            await self.redis.set(key, token, ex=self.records.data_lifetime_s)

    # --- reads ---------------------------------------------------------------------------

    async def get(self, memory_id: str, user_id: str) -> dict[str, Any]:
        record = await self.records.owned(memory_id, user_id)
        await self.records.renew(user_id)
        return record

    async def page(
        self, user_id: str, character_id: str | None, after: PageKey | None, limit: int
    ) -> Page[dict[str, Any], PageKey]:
        """A page of the user's memories (of one character), newest first."""
        await self.records.renew(user_id)
        return await self.records.page_owned(
            user_id,
            after,
            limit,
            lambda r: public(r) if character_id in (None, r["character_id"]) else None,
        )

    async def recall(self, user_id: str, character_id: str) -> Recalled:
        """The user's memories of the character: read again only when they changed."""
        version = await self.redis.get(self.version_key(user_id)) or ""
        pair = (user_id, character_id)
        cached = self._recalled.get(pair)
        if cached is not None and cached[0] == version:
            self._recalled.move_to_end(pair)
            return cached[1]
        memories = [Remembered.of(r) for r in await self._all(user_id, character_id)]
        # Indexing 2,000 memories takes some 50 ms: in a thread, not on the event loop that
        # streams everyone's replies. Once per version.
        recalled = Recalled(memories, await asyncio.to_thread(MemoryIndex.build, memories))
        self._recalled[pair] = (version, recalled)
        self._recalled.move_to_end(pair)
        # Each pair counts one memory at least: pairs without memories must not pile up.
        kept = sum(max(len(r.memories), 1) for _, r in self._recalled.values())
        while kept > RECALLED_MEMORIES and len(self._recalled) > 1:
            kept -= max(len(self._recalled.popitem(last=False)[1][1].memories), 1)
        return recalled

    async def _all(self, user_id: str, character_id: str) -> list[dict[str, Any]]:
        """Every memory of the user's of the character (bounded by their quota)."""
        return [r for r in await self._every(user_id) if r.get("character_id") == character_id]

    async def _every(self, user_id: str) -> list[dict[str, Any]]:
        """Every memory of the user's (bounded by their quota)."""
        ids = await self.redis.zrange(self.records.owner_key(user_id), 0, -1)
        if not ids:
            return []
        raws = await self.redis.mget([self.records.item_key(i) for i in ids])
        return [record for raw in raws if (record := _readable(raw)) is not None]

    async def pinned_count(self, user_id: str, character_id: str) -> int:
        recalled = await self.recall(user_id, character_id)
        return sum(m.pinned for m in recalled.memories)


def _readable(raw: str | None) -> dict[str, Any] | None:
    """A stored memory, or None for one that is gone or cannot be read (skipped, not a
    failed turn)."""
    if not raw:
        return None
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            return None
        Remembered.of(record)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return record


class _TakenOver(Exception):
    """The user took a learned memory over (edited it): learning leaves it."""


class _NothingEarlier(Exception):
    """No earlier text of a memory stands once the messages its text came from are gone."""


def _reverted(record: dict[str, Any], gone: Callable[[Origin], bool]) -> dict[str, Any]:
    """The fields that take a learned memory back to its latest text not learned from the
    `gone` messages, with where that was learned (an earlier text kept before history said
    where stays, learned nowhere in particular)."""
    if record.get("source") != "learned":
        raise _TakenOver()
    origin = origin_of(record)
    if origin is None or not gone(origin):
        return {}  # relearned elsewhere meanwhile
    history = record.get("history", [])
    for at in range(len(history) - 1, -1, -1):
        earlier = history[at].get("origin") or {}
        back = origin_of(earlier)
        if back is None or not gone(back):
            unknown = dict.fromkeys(("session_id", "message_id", "root", "covered", "digest"))
            return {"text": history[at]["text"], "history": history[:at], **unknown, **earlier}
    raise _NothingEarlier()


def _origin_fields(origin: Origin) -> dict[str, Any]:
    return asdict(origin)  # as a record keeps it: session_id, message_id, root, covered, digest
