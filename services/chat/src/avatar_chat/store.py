"""Chat sessions in Redis, owned by the chat service.

Keys (all expire after `SESSION_TTL_S` without use):
- `chat:session:{id}`: hash of owner, model, created_at, updated_at, prompt_tokens,
  completion_tokens (the LLM's own counts, summed over the session), last_prompt_tokens,
  summary_covered (messages folded into the summary the last turn used), message_count
  (messages ever recorded), `calibration:{model}` (learned from the LLM's counts, see
  `context.tokens`), and holder (whose stored sessions it counts in, below).
- `chat:session:{id}:messages`: list of JSON messages {role, content, at}, oldest first: the
  newest of them, at most MAX_STORED_MESSAGES and MAX_STORED_BYTES (ANON_MAX_STORED_BYTES
  for an anonymous owner), the latest turn always (the client sends the conversation
  itself; the list is its history to show, read a page at a time). The hash's
  `stored_bytes` counts them.
- the conversations budget (avatar_shared.budget): each session is a holder (`chat:{id}`)
  charged for its messages' bytes plus SESSION_OVERHEAD, expiring with it. Admission refuses
  turns while the budget is full, so what is recorded was admitted with room (it may pass
  the limit by the turns in flight at that moment).
- `chat:session:{id}:summaries`: the summary cache (see `context.summaries`).
- `chat:stored-of:{holder}`: the stored sessions of one holder, a signed-in user (their id)
  or, for anonymous callers, their client address (`addr:{address}`, all its ids together:
  ids are free), each scored by when it expires (so the least recently used comes first);
  expired ones leave it at the holder's next write, and the key expires with its newest.
  At most MAX_STORED_SESSIONS_PER_USER (MAX_STORED_SESSIONS_PER_ADDRESS): a new session
  past it deletes the holder's least recently used one, its bytes given back and its active
  place freed, so one client cannot fill the conversations budget for everyone.

Turns are written only after a reply succeeded, so a failed request leaves none. (Summaries
are cached as soon as they are made; a new session whose first reply failed drops its own.)
Another user's session is reported as missing, never as forbidden: ids are not disclosed.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from avatar_chat.context.summaries import Summary, parse_summaries, summaries_key
from avatar_chat.errors import SessionNotFound
from avatar_chat.limits.admission import ACTIVE, LEASE_FUNCTIONS, Lease, sessions_of
from avatar_shared.budget import BUDGET_FUNCTIONS, Budget
from avatar_shared.identity import Identity
from avatar_shared.pages import Page
from avatar_shared.rate import address_key
from avatar_shared.timestamps import utc_now

# Bytes a session is charged beyond its messages: its hash and keys.
SESSION_OVERHEAD = 1024
STORED_OF = "chat:stored-of:"


def _meta_key(session_id: str) -> str:
    return f"chat:session:{session_id}"


def _messages_key(session_id: str) -> str:
    return f"chat:session:{session_id}:messages"


def _budget_holder(session_id: str) -> str:
    """The session, as the conversations budget holds it."""
    return f"chat:{session_id}"


def _stored_of(holder: str) -> str:
    """The stored sessions of a holder (`_stored_holder`): id -> when it expires."""
    return f"{STORED_OF}{holder}"


def _stored_holder(owner: Identity) -> str:
    """Whose count of stored sessions a session is in: a signed-in user's own, an anonymous
    caller's address's (all its ids together: ids are free)."""
    return owner.user_id if owner.signed_in else address_key(owner.address)


# Forgets a session: its keys, its holder's count of it, and its bytes given back to the
# conversations budget. Its keys are named from its id here (one Redis server, as everywhere
# in this project, not a cluster): an evicted session is found by the script, not the caller.
FORGET_FUNCTIONS = (
    BUDGET_FUNCTIONS
    + """
local function session_forget(id, budget_total, budget_held, budget_until)
  local meta = 'META' .. id
  local holder = redis.call('HGET', meta, 'holder')
  if holder then redis.call('ZREM', 'STORED_OF' .. holder, id) end
  redis.call('DEL', meta, meta .. ':messages', meta .. ':summaries')
  local charged = 'BUDGET_HOLDER' .. id
  local size = tonumber(redis.call('HGET', budget_held, charged) or '0')
  budget_hold(budget_total, budget_held, budget_until, charged, -size, 'inf')
end
""".replace("META", _meta_key(""))
    .replace("STORED_OF", STORED_OF)
    .replace("BUDGET_HOLDER", _budget_holder(""))
)

# Appends one turn atomically and in one round trip, and ends the turn's lease (see
# limits.admission); refuses (returns 0) when another user owns the session. The history
# keeps the newest messages within the caps on messages and bytes (the turn just recorded
# always), and the session is charged to the conversations budget for what it keeps. The
# session is one of its holder's stored sessions (scored by when it expires: the least
# recently used first); a session new to them past their cap deletes their least recently
# used one (and frees its active place: see limits.admission), never anyone else's.
# KEYS: meta, messages, summaries, the budget's total, held, until, the holder's stored
# sessions, the active sessions, then the lease sets.
# ARGV: user, model, now, prompt tokens, completion tokens, ttl, summary_covered,
# calibration field, its value ('' when none was learned), messages kept at most, bytes kept
# at most, the budget's holder, the lease id, the session id, the holder, the holder's
# stored sessions at most, then the messages as JSON.
RECORD_TURN = (
    FORGET_FUNCTIONS
    + LEASE_FUNCTIONS
    + """
local meta, messages, stored_of, active = KEYS[1], KEYS[2], KEYS[7], KEYS[8]
local session, holder, holder_cap = ARGV[14], ARGV[15], tonumber(ARGV[16])
local first_message = 17
lease_end(KEYS, 9, ARGV[13])
local owner = redis.call('HGET', meta, 'owner')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('HSET', meta, 'owner', ARGV[1], 'created_at', ARGV[3]) end
local clock = redis.call('TIME')  -- to the microsecond: it orders the holder's sessions
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local expires = now + tonumber(ARGV[6])

-- The holder's count: expired sessions leave it; a session new to it past the cap makes
-- room by deleting the holder's least recently used one.
local was = redis.call('HGET', meta, 'holder')
if was and was ~= holder then  -- an anonymous id's session continued from another address
  redis.call('ZREM', 'STORED_OF' .. was, session)
end
redis.call('HSET', meta, 'holder', holder)
redis.call('ZREMRANGEBYSCORE', stored_of, '-inf', now)
if not redis.call('ZSCORE', stored_of, session) then
  while redis.call('ZCARD', stored_of) >= holder_cap do
    local oldest = redis.call('ZRANGE', stored_of, 0, 0)[1]
    local its = 'META' .. oldest
    if redis.call('HGET', its, 'holder') == holder then  -- only ever the holder's own
      local its_owner = redis.call('HGET', its, 'owner')
      session_forget(oldest, KEYS[4], KEYS[5], KEYS[6])
      redis.call('ZREM', active, oldest)  -- its place, and in the shares that count it
      if its_owner then redis.call('ZREM', 'ACTIVE_OF' .. its_owner, oldest) end
      redis.call('ZREM', 'ACTIVE_OF' .. holder, oldest)
    end
    redis.call('ZREM', stored_of, oldest)
  end
end
redis.call('ZADD', stored_of, expires, session)
redis.call('EXPIRE', stored_of, ARGV[6])  -- the newest member expires last: with it

redis.call('HSET', meta, 'model', ARGV[2], 'updated_at', ARGV[3],
  'last_prompt_tokens', ARGV[4], 'summary_covered', ARGV[7])
if ARGV[9] ~= '' then redis.call('HSET', meta, ARGV[8], ARGV[9]) end
redis.call('HINCRBY', meta, 'prompt_tokens', ARGV[4])
redis.call('HINCRBY', meta, 'completion_tokens', ARGV[5])
local new = #ARGV - first_message + 1
redis.call('HINCRBY', meta, 'message_count', new)
local stored = tonumber(redis.call('HGET', meta, 'stored_bytes') or '-1')
if stored < 0 then  -- a session stored before the byte cap: counted once
  stored = 0
  for _, kept in ipairs(redis.call('LRANGE', messages, 0, -1)) do stored = stored + #kept end
end
for i = first_message, #ARGV do stored = stored + #ARGV[i] end
local count = redis.call('RPUSH', messages, unpack(ARGV, first_message))
while count > new and (count > tonumber(ARGV[10]) or stored > tonumber(ARGV[11])) do
  stored = stored - #redis.call('LPOP', messages)
  count = count - 1
end
redis.call('HSET', meta, 'stored_bytes', stored)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
local charged_as = ARGV[12]
local charged = stored + SESSION_OVERHEAD
local before = tonumber(redis.call('HGET', KEYS[5], charged_as) or '0')
budget_hold(KEYS[4], KEYS[5], KEYS[6], charged_as, charged - before, expires)
redis.call('ZADD', KEYS[6], 'XX', expires, charged_as)  -- renewed with the keys' TTL
return 1
""".replace("SESSION_OVERHEAD", str(SESSION_OVERHEAD))
    .replace("META", _meta_key(""))
    .replace("STORED_OF", STORED_OF)
    .replace("ACTIVE_OF", sessions_of(""))
)

# Deletes a session of its owner's, gives its bytes back to the budget and takes it out of
# its holder's count; 0 when there is none of theirs. KEYS: meta, the budget's total, held,
# until. ARGV: user, the session id.
DELETE = (
    FORGET_FUNCTIONS
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
session_forget(ARGV[2], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)


@dataclass(frozen=True)
class SessionState:
    """What planning a turn needs from the stored session."""

    meta: dict[str, str] = field(default_factory=dict)
    summaries: dict[int, Summary] = field(default_factory=dict)

    def calibration(self, model: str) -> float | None:
        value = self.meta.get(_calibration_field(model))
        return float(value) if value else None


@dataclass(frozen=True)
class TurnRecord:
    """One finished turn, as `record_turn` stores it."""

    exchanged: list[dict[str, str]]
    model: str
    prompt_tokens: int
    completion_tokens: int
    summary_covered: int
    calibration: float | None


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
    ) -> None:
        """`max_bytes`: what a signed-in user's session keeps, and an anonymous caller's;
        `max_sessions`: the stored sessions a signed-in user keeps, and an anonymous address."""
        self.redis = redis
        self.budget = budget
        self.ttl_s = ttl_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_sessions = max_sessions
        self._record_turn = redis.register_script(RECORD_TURN)
        self._delete = redis.register_script(DELETE)

    async def load(self, session_id: str, user_id: str) -> SessionState:
        """The caller's session in one round trip; empty for a new id; 404 for anyone else's."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(_meta_key(session_id))
            pipe.hgetall(summaries_key(session_id))
            meta, summaries = await pipe.execute()
        if meta.get("owner", user_id) != user_id:
            raise SessionNotFound(session_id)
        return SessionState(meta, parse_summaries(summaries))

    async def record_turn(
        self, session_id: str, owner: Identity, turn: TurnRecord, lease: Lease | None = None
    ) -> None:
        """Stores the turn and ends its `lease` (given by the admission), in one step."""
        now = utc_now()
        signed_in, anonymous = self.max_bytes
        keys = [_meta_key(session_id), _messages_key(session_id), summaries_key(session_id)]
        holder = _stored_holder(owner)
        keys += [*self.budget.keys, _stored_of(holder), ACTIVE, *(lease.keys if lease else ())]
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
                self.max_messages,
                signed_in if owner.signed_in else anonymous,
                _budget_holder(session_id),
                lease.id if lease else "",
                session_id,
                holder,
                self.max_sessions[0] if owner.signed_in else self.max_sessions[1],
                *(json.dumps({**m, "at": now}, ensure_ascii=False) for m in turn.exchanged),
            ],
        )
        if not recorded:
            raise SessionNotFound(session_id)

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
        return {
            "session_id": session_id,
            "model": meta.get("model"),
            "created_at": meta.get("created_at"),
            "updated_at": meta.get("updated_at"),
            "usage": {
                "prompt_tokens": int(meta.get("prompt_tokens", 0)),
                "completion_tokens": int(meta.get("completion_tokens", 0)),
            },
            "message_count": count,
            "messages": [json.loads(item) for item in reversed(page.items)],
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

    async def delete(self, session_id: str, user_id: str) -> None:
        keys = [_meta_key(session_id), *self.budget.keys]
        deleted = await self._delete(keys=keys, args=[user_id, session_id])
        if not deleted:
            raise SessionNotFound(session_id)
