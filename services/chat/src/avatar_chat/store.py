"""Chat sessions in Redis, owned by the chat service.

A session is either a record of a client's conversation (its client sends `messages`; mode
`client`) or a conversation kept on the server (mode `server`: started by POST
/api/chat/sessions, a branch or an import; its stored messages are the conversation).

Keys:
- `chat:session:{id}`: hash of owner, mode, model, created_at, updated_at, active_at (Unix
  seconds of the last change, the library's order), prompt_tokens, completion_tokens (the
  LLM's own counts, summed), last_prompt_tokens, summary_covered (messages folded into the
  summary the last turn used), message_count, stored_bytes, `calibration:{model}` (see
  `context.tokens`), holder (below), title, preview (the last message, cut), pinned, and
  what a server conversation is played with: character_id, user_persona_id, persona,
  scenario (JSON), branched_from; kept ('1': kept until deleted); memory (its long-term
  memory mode: on, read_only, off; absent: on), root (the conversation a branch comes from
  first; absent: itself), memory_marks (how far it was read for memories:
  `memory.learning`).
- `chat:session:{id}:messages`: list of JSON messages, oldest first (`conversations.messages`
  has their form). A client's record keeps the newest MAX_STORED_MESSAGES within
  MAX_STORED_BYTES (ANON_MAX_STORED_BYTES for an anonymous owner); a server conversation is
  never trimmed: a turn or edit past those caps is refused (409 `conversation_full`).
- `chat:session:{id}:summaries`: the summary cache (see `context.summaries`).
- `chat:session:{id}:busy`: the lease id of the turn generating a reply for a server
  conversation (see `limits.admission`); while it exists, every change answers 409.
- Expiry: every key of a session expires SESSION_TTL_S after its last use, except a signed-in
  owner's server conversation, which is kept until deleted (its summaries are a cache and
  still expire), counted in `chat:kept:{user}` (count, bytes) within
  MAX_CONVERSATIONS_PER_USER and MAX_CONVERSATION_BYTES_PER_USER (409 `quota_exceeded`).
- `chat:stored-of:{holder}`: the expiring sessions of one holder, a signed-in user (their id)
  or, for anonymous callers, their client address (`addr:{address}`, all its ids together:
  ids are free), each scored by when it expires. At most MAX_STORED_SESSIONS_PER_USER
  (MAX_STORED_SESSIONS_PER_ADDRESS): a new one past it deletes the holder's least recently
  used one, its bytes given back and its active place freed. An address's expires with its
  newest session; an account's stays (bounded by its cap), so that the sessions that expired
  leave the account's library at its next write.
- `chat:library:{owner}` and `chat:library:{owner}:{character_id}`: the owner's sessions by
  last activity (pinned ones first), for `GET /api/chat/sessions`. A session that expired
  leaves them when they are read past it, when its account next writes (above), or swept
  when they outgrow what the owner may keep; an anonymous owner's expire with its newest
  session.
- the conversations budget (avatar_shared.budget): each session is a holder (`chat:{id}`)
  charged for its messages' bytes plus SESSION_OVERHEAD, until it expires.

Turns are written only after a reply succeeded (or, streamed, was stopped by its client: what
was sent, marked interrupted), so a failed request leaves none. Another user's session is
reported as missing, never as forbidden: ids are not disclosed.
"""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from avatar_chat.context.summaries import Summary, parse_summaries, summaries_key
from avatar_chat.conversations import messages as msgs
from avatar_chat.conversations.ids import new_message_id
from avatar_chat.errors import (
    ConversationBusy,
    ConversationFull,
    NotAConversation,
    QuotaExceeded,
    SessionNotFound,
)
from avatar_chat.limits.admission import ACTIVE, Lease, calls_of, session_of_lease
from avatar_chat.store_scripts import (
    ADOPT,
    CREATE,
    DELETE,
    KEPT,
    LIBRARY,
    META,
    MUTATE,
    RECORD_TURN,
    RENAME,
    SESSION_OVERHEAD,
    STORED_OF,
)
from avatar_shared.budget import Budget
from avatar_shared.errors import ValidationFailed
from avatar_shared.identity import Identity
from avatar_shared.pages import Page
from avatar_shared.rate import address_key
from avatar_shared.timestamps import utc_now


def kept_on_server() -> ValidationFailed:
    """A client's turn (`messages`) naming a conversation kept on the server."""
    return ValidationFailed(
        "messages: this session is a conversation kept on the server: send its new message "
        "as `message` (without `messages`)"
    )


__all__ = ["SESSION_OVERHEAD", "SessionState", "SessionStore", "TurnRecord"]

# Fields of a session's hash that a conversation listing shows.
LISTED = (
    *("title", "character_id", "user_persona_id", "message_count", "preview"),
    *("created_at", "updated_at", "pinned", "mode", "active_at", "memory"),
)


def _meta_key(session_id: str) -> str:
    return f"{META}{session_id}"


def _messages_key(session_id: str) -> str:
    return f"{META}{session_id}:messages"


def busy_key(session_id: str) -> str:
    return f"{META}{session_id}:busy"


def _stored_of(holder: str) -> str:
    return f"{STORED_OF}{holder}"


def _library(owner: str, character_id: str | None = None) -> str:
    return f"{LIBRARY}{owner}" + (f":{character_id}" if character_id else "")


def _stored_holder(owner: Identity) -> str:
    """Whose count of stored sessions a session is in: a signed-in user's own, an anonymous
    caller's address's (all its ids together: ids are free)."""
    return owner.user_id if owner.signed_in else address_key(owner.address)


@dataclass(frozen=True)
class SessionState:
    """What planning a turn needs from the stored session (and, for a server conversation,
    its messages)."""

    meta: dict[str, str] = field(default_factory=dict)
    summaries: dict[int, Summary] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)  # the messages as stored, JSON
    kept_bytes: int = 0  # what the owner's kept conversations hold together

    def calibration(self, model: str) -> float | None:
        value = self.meta.get(_calibration_field(model))
        return float(value) if value else None

    @property
    def messages(self) -> list[msgs.Message]:
        return [json.loads(item) for item in self.raw]

    @property
    def is_conversation(self) -> bool:
        return self.meta.get("mode") == "server"


@dataclass(frozen=True)
class TurnRecord:
    """One finished turn, as `record_turn` stores it: messages to append (an id and a time
    are given to those without), or the last message replaced (`replaced`: as it was read,
    and its new form)."""

    exchanged: list[dict[str, Any]]
    model: str
    prompt_tokens: int
    completion_tokens: int
    summary_covered: int
    calibration: float | None
    replaced: tuple[str, msgs.Message] | None = None
    character_id: str | None = None  # a client's record: the character it talks with
    on_server: bool = False  # a turn of a conversation kept on the server
    found: bool = False  # a client's record that was there when the turn began


@dataclass(frozen=True)
class Caps:
    """How much sessions may hold (from the settings)."""

    messages: int = 1000  # MAX_STORED_MESSAGES
    bytes: tuple[int, int] = (1024 * 1024, 256 * 1024)  # signed in, anonymous
    sessions: tuple[int, int] = (200, 20)  # stored (expiring) per user, per address
    kept: tuple[int, int] = (1000, 32 * 1024 * 1024)  # kept per user: count, bytes

    def bytes_for(self, owner_signed_in: bool) -> int:
        return self.bytes[0] if owner_signed_in else self.bytes[1]

    @property
    def library(self) -> int:
        """Members a library holds before it sheds expired ones."""
        return self.kept[0] + self.sessions[0]


def _calibration_field(model: str) -> str:
    return f"calibration:{model}"


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        budget: Budget,
        ttl_s: int,
        max_messages: int = 1000,
        max_bytes: tuple[int, int] = (1024 * 1024, 256 * 1024),
        max_sessions: tuple[int, int] = (200, 20),
        max_kept: tuple[int, int] = (1000, 32 * 1024 * 1024),
    ) -> None:
        """`max_bytes`: what a signed-in user's session keeps, and an anonymous caller's;
        `max_sessions`: the expiring sessions a signed-in user keeps, and an anonymous
        address; `max_kept`: a signed-in user's kept conversations, count and bytes."""
        self.redis = redis
        self.budget = budget
        self.ttl_s = ttl_s
        self.caps = Caps(max_messages, max_bytes, max_sessions, max_kept)
        self._record_turn = redis.register_script(RECORD_TURN)
        self._create = redis.register_script(CREATE)
        self._mutate = redis.register_script(MUTATE)
        self._rename = redis.register_script(RENAME)
        self._delete = redis.register_script(DELETE)
        self._adopt = redis.register_script(ADOPT)

    # --- reads ---------------------------------------------------------------------------

    async def load(
        self, session_id: str, user_id: str, with_messages: bool = False
    ) -> SessionState:
        """The caller's session in one round trip; empty for a new id; 404 for anyone else's.
        `with_messages`: a server conversation, with its messages (404 when there is none)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(_meta_key(session_id))
            pipe.hgetall(summaries_key(session_id))
            if with_messages:
                pipe.lrange(_messages_key(session_id), 0, -1)
                pipe.hget(f"{KEPT}{user_id}", "bytes")
            meta, summaries, *more = await pipe.execute()
        if meta.get("owner", user_id) != user_id or (with_messages and not meta):
            raise SessionNotFound(session_id)
        raw, kept_bytes = (more[0], int(more[1] or 0)) if more else ([], 0)
        state = SessionState(meta, parse_summaries(summaries), raw, kept_bytes)
        if with_messages and not state.is_conversation:
            raise NotAConversation()
        return state

    async def owned(self, session_id: str, user_id: str) -> dict[str, str]:
        """The caller's session's hash; 404 when there is none of theirs."""
        meta: dict[str, str] = await self.redis.hgetall(_meta_key(session_id))  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        if not meta or meta.get("owner") != user_id:
            raise SessionNotFound(session_id)
        return meta

    async def history(
        self, session_id: str, user_id: str, limit: int, before: int | None
    ) -> dict[str, Any]:
        """The session with a page of its messages: the `limit` before message number
        `before` (counted from the session's first, 0-based; None: the latest). Messages are
        numbered: a number is a message's position, newest first (avatar_shared.pages)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(_meta_key(session_id))
            pipe.llen(_messages_key(session_id))
            pipe.hgetall(summaries_key(session_id))
            meta, kept, summaries = await pipe.execute()
        if not meta or meta.get("owner") != user_id:
            raise SessionNotFound(session_id)
        count = int(meta.get("message_count", kept))
        first_kept = count - kept  # older messages were dropped
        end = count if before is None else max(first_kept, min(before, count))
        read_from = max(first_kept, end - limit - 1)  # one more: is there an older page?
        raw = (
            await self.redis.lrange(  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
                _messages_key(session_id), read_from - first_kept, end - first_kept - 1
            )
            if end > read_from
            else []
        )
        # Not strict: a turn recorded meanwhile may have trimmed the list (the page is then
        # short and says it is the oldest; the next read is whole again).
        numbered = zip(reversed(raw), range(end - 1, read_from - 1, -1), strict=False)
        page = Page.of(numbered, limit)  # newest first
        start = max(first_kept, end - limit)
        summary = parse_summaries(summaries).get(int(meta.get("summary_covered", 0)))
        shown = [
            msgs.public(json.loads(item), start + n) for n, item in enumerate(reversed(page.items))
        ]
        return {
            **listed(session_id, meta),
            "model": meta.get("model"),
            "usage": {
                "prompt_tokens": int(meta.get("prompt_tokens", 0)),
                "completion_tokens": int(meta.get("completion_tokens", 0)),
            },
            "message_count": count,
            "messages": shown,
            "first_message": start,
            "next_before": page.next,
            "last_prompt_tokens": int(meta.get("last_prompt_tokens", 0)),
            "summary": summary
            and {
                "content": summary.content,
                "covered_turns": summary.covered,
                "created_at": summary.at,
            },
        }

    async def library(
        self,
        user_id: str,
        character_id: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> Page[dict[str, Any], tuple[float, str]]:
        """A page of the owner's sessions, pinned first, then the most recently active
        (`after`: the position of the previous page's last one). Sessions that expired
        leave the library as they are met."""
        key = _library(user_id, character_id)
        found: list[tuple[dict[str, Any], tuple[float, str]]] = []
        top: float | str = "+inf" if after is None else after[0]
        while len(found) <= limit:
            # Ties (the same microsecond) are rare: a few more than the page are read.
            wanted = limit + 1 - len(found) + 8
            members = await self.redis.zrevrangebyscore(
                key, top, "-inf", start=0, num=wanted, withscores=True
            )
            if after is not None:
                members = [
                    (m, s) for m, s in members if s < after[0] or (s == after[0] and m < after[1])
                ]
            if not members:
                break
            found += await self._listed(user_id, key, members)
            after = (members[-1][1], members[-1][0])
            top = after[0]
        return Page.of(found, limit)

    async def _listed(
        self, owner: str, key: str, members: Sequence[tuple[str, float]]
    ) -> list[tuple[dict[str, Any], tuple[float, str]]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for member, _ in members:
                pipe.hmget(_meta_key(member), ["owner", *LISTED])
            metas = await pipe.execute()
        found, gone = [], []
        for (member, score), values in zip(members, metas, strict=True):
            if values[0] != owner:  # expired (or its id is another's now)
                gone.append(member)
                continue
            found.append(
                (listed(member, dict(zip(LISTED, values[1:], strict=True))), (score, member))
            )
        if gone:
            await self.redis.zrem(key, *gone)
        return found

    # --- writes --------------------------------------------------------------------------

    async def record_turn(
        self, session_id: str, owner: Identity, turn: TurnRecord, lease: Lease | None = None
    ) -> None:
        """Stores the turn and ends its `lease` (given by the admission), in one step."""
        now = utc_now()
        appended = [{"id": new_message_id(), **m, "at": m.get("at", now)} for m in turn.exchanged]
        replaced, replacement = turn.replaced or ("", None)
        last = appended[-1] if appended else replacement
        keys = [_meta_key(session_id), _messages_key(session_id), summaries_key(session_id)]
        holder = _stored_holder(owner)
        keys += [*self.budget.keys, _stored_of(holder), ACTIVE, busy_key(session_id)]
        keys += lease.keys if lease else ()
        recorded = await self._record_turn(
            keys=keys,
            args=[
                owner.user_id,
                turn.model,
                now,
                turn.prompt_tokens,
                turn.completion_tokens,
                self.ttl_s,
                turn.summary_covered,
                _calibration_field(turn.model),
                "" if turn.calibration is None else f"{turn.calibration:.4f}",
                self.caps.messages,
                self.caps.bytes_for(owner.signed_in),
                lease.id if lease else "",
                session_id,
                holder,
                self.caps.sessions[0] if owner.signed_in else self.caps.sessions[1],
                replaced,
                msgs.encode(replacement) if replacement else "",
                msgs.title(appended),
                msgs.preview([last]) if last else "",
                turn.character_id or "",
                self.caps.library,
                "1" if turn.on_server else ("found" if turn.found else ""),
                *(msgs.encode(m) for m in appended),
            ],
        )
        if recorded == 0:
            raise SessionNotFound(session_id)
        if recorded == -1:
            raise ConversationBusy("The conversation changed while the reply was generated.")
        if recorded == -2:
            raise kept_on_server()

    async def create(
        self,
        owner: Identity,
        fields: dict[str, str],
        opening: list[msgs.Message],
        spare: str = "",
    ) -> str:
        """A new server conversation of `owner`'s with its `opening` messages and `fields`
        (what it is played with); its id. A signed-in owner's is kept, within their quota;
        an anonymous owner's may take the place of their oldest, never of `spare` (the
        conversation a branch is made from)."""
        session_id = str(uuid.uuid4())
        holder = "" if owner.signed_in else _stored_holder(owner)
        encoded = [msgs.encode(m) for m in opening]
        if (
            sum(len(e.encode()) for e in encoded) > self.caps.bytes_for(owner.signed_in)
            or len(encoded) > self.caps.messages
        ):
            raise ConversationFull(
                f"A conversation holds at most {self.caps.messages} messages and "
                f"{self.caps.bytes_for(owner.signed_in)} bytes of them."
            )
        fields = {k: v for k, v in fields.items() if v}
        if opening:
            fields["preview"] = msgs.preview(opening)
        pairs = [item for pair in fields.items() for item in pair]
        keys = [_meta_key(session_id), _messages_key(session_id), *self.budget.keys]
        keys += [_stored_of(holder or owner.user_id), ACTIVE, f"{KEPT}{owner.user_id}"]
        outcome, *detail = await self._create(
            keys=keys,
            args=[
                session_id,
                owner.user_id,
                utc_now(),
                self.ttl_s,
                holder,
                self.caps.sessions[1],
                *self.caps.kept,
                self.budget.limit,
                self.caps.library,
                spare,
                len(pairs),
                *pairs,
                *encoded,
            ],
        )
        if outcome == "storage":
            raise self.budget.full()
        if outcome == "quota":
            if detail[0] == "count":
                raise self._kept_count_spent()
            raise self.kept_bytes_spent()
        return session_id

    async def check_room(self, owner: Identity) -> None:
        """409 when a signed-in owner's kept conversations already hold their quota (count or
        bytes), so that no new one could be kept: asked before costly work (reading an
        import). `create` decides, atomically, with what the new one holds."""
        if not owner.signed_in:  # an anonymous owner's newest takes the place of its oldest
            return
        kept = await self.redis.hmget(f"{KEPT}{owner.user_id}", ["count", "bytes"])  # type: ignore[misc]  # redis-py: "Awaitable[T] | T"
        count, stored = (int(value or 0) for value in kept)
        if count >= self.caps.kept[0]:
            raise self._kept_count_spent()
        if stored >= self.caps.kept[1]:
            raise self.kept_bytes_spent()

    def _kept_count_spent(self) -> QuotaExceeded:
        return QuotaExceeded(
            f"You keep {self.caps.kept[0]} conversations, the most one user may; delete one first."
        )

    def kept_bytes_spent(self) -> QuotaExceeded:
        return QuotaExceeded(
            f"Your conversations hold {self.caps.kept[1]} bytes, the most one user may; "
            "delete one (or some messages) first."
        )

    async def change_message(
        self,
        session_id: str,
        owner: Identity,
        index: int,
        before: str,
        after: msgs.Message | None,
        remaining: list[msgs.Message],
        choice: bool = False,
    ) -> None:
        """Replaces the message at `index` (as read: `before`) with `after`, or deletes it
        (`after` None); `remaining`: the conversation afterwards (for its preview). `choice`:
        `after` only shows another stored alternate (a swipe), never refused for bytes."""
        keys = [_meta_key(session_id), _messages_key(session_id), busy_key(session_id)]
        outcome = await self._mutate(
            keys=[*keys, *self.budget.keys, f"{KEPT}{owner.user_id}"],
            args=[
                owner.user_id,
                session_id,
                index,
                before,
                msgs.encode(after) if after else "",
                self.caps.bytes_for(owner.signed_in),
                utc_now(),
                self.ttl_s,
                msgs.preview(remaining),
                self.budget.limit,
                self.caps.library,
                self.caps.kept[1],
                "1" if choice else "",
            ],
        )
        if outcome == "quota":
            raise self.kept_bytes_spent()
        if outcome == "missing":
            raise SessionNotFound(session_id)
        if outcome == "client":
            raise NotAConversation()
        if outcome in ("busy", "changed"):  # changed: by a turn that just ended
            raise ConversationBusy()
        if outcome == "full":
            raise ConversationFull(
                f"A conversation holds at most {self.caps.bytes_for(owner.signed_in)} bytes "
                "of messages; this edit would pass it."
            )
        if outcome == "storage":
            raise self.budget.full()

    async def rename(
        self,
        session_id: str,
        user_id: str,
        title: str | None,
        pinned: bool | None,
        memory: str | None = None,
    ) -> dict[str, Any]:
        pin = "" if pinned is None else ("1" if pinned else "0")
        args: list[str | int] = [user_id, session_id, title or "", pin, self.ttl_s]
        args += [self.caps.library, memory or ""]
        done = await self._rename(keys=[_meta_key(session_id)], args=args)
        if done == 0:
            raise SessionNotFound(session_id)
        if done == -1:
            raise ConversationBusy(
                "A reply for this conversation is being generated with its memory as it is; "
                "change the memory mode when the reply has ended."
            )
        return listed(session_id, await self.owned(session_id, user_id))

    async def copy_summaries(self, source: str, target: str, covering_at_most: int) -> None:
        """A branch shares the summaries of its prefix (they match it by digest)."""
        kept = {
            n: value
            for n, value in (await self.redis.hgetall(summaries_key(source))).items()  # type: ignore[misc]
            if n.isdigit() and int(n) <= covering_at_most
        }
        if kept:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(summaries_key(target), mapping=kept)
                pipe.expire(summaries_key(target), self.ttl_s)
                await pipe.execute()

    async def adopt(self, anonymous_id: str, account: str) -> tuple[int, int]:
        """Moves the anonymous id's sessions to the account (signing in keeps what the
        browser made), each in one step: how many moved, and how many stayed (past the
        account's quotas, or with a turn under way right now; a turn starting a conversation
        the client keeps counts too, as its record will be the anonymous id's)."""
        library = _library(anonymous_id)
        members = await self.redis.zrange(library, 0, -1)  # oldest activity first
        moved = stayed = 0
        for session_id in members:
            keys = [_meta_key(session_id), f"{KEPT}{account}", _stored_of(account)]
            outcome = await self._adopt(
                keys=[*keys, *self.budget.keys, ACTIVE, calls_of(anonymous_id)],
                args=[
                    anonymous_id,
                    account,
                    session_id,
                    *self.caps.kept,
                    self.caps.sessions[0],
                    self.ttl_s,
                    self.caps.library,
                ],
            )
            if outcome == "moved":
                moved += 1
            elif outcome == "kept":
                stayed += 1
            else:  # expired meanwhile: it leaves the library
                await self.redis.zrem(library, session_id)
        return moved, stayed + len(await self._turning(anonymous_id) - set(members))

    async def _turning(self, caller: str) -> set[str]:
        """The conversations `caller` has a turn under way for."""
        seconds, micros = await self.redis.time()
        leases = await self.redis.zrangebyscore(calls_of(caller), seconds + micros / 1e6, "+inf")
        return {session_of_lease(lease) for lease in leases}

    async def delete(self, session_id: str, user_id: str) -> None:
        keys = [_meta_key(session_id), *self.budget.keys]
        deleted = await self._delete(keys=keys, args=[user_id, session_id])
        if deleted == 0:
            raise SessionNotFound(session_id)
        if deleted == -1:
            raise ConversationBusy()


def listed(session_id: str, meta: Mapping[str, str | None]) -> dict[str, Any]:
    """A session as the conversation list shows it."""
    return {
        "session_id": session_id,
        "title": meta.get("title") or None,
        "character_id": meta.get("character_id") or None,
        "user_persona_id": meta.get("user_persona_id") or None,
        "message_count": int(meta.get("message_count") or 0),
        "preview": meta.get("preview") or None,
        "created_at": meta.get("created_at"),
        "updated_at": meta.get("updated_at"),
        "pinned": meta.get("pinned") == "1",
        "mode": meta.get("mode") or "client",
        "memory": meta.get("memory") or "on",
    }
