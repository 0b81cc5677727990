"""Chat sessions in Redis, owned by the chat service.

Keys (all expire after `SESSION_TTL_S` without use):
- `chat:session:{id}`: hash of owner, model, created_at, updated_at, prompt_tokens,
  completion_tokens (the LLM's own counts, summed over the session), last_prompt_tokens,
  summary_covered (messages folded into the summary the last turn used), message_count
  (messages ever recorded), and `calibration:{model}` (learned from the LLM's counts, see
  `context.tokens`).
- `chat:session:{id}:messages`: list of JSON messages {role, content, at}, oldest first: the
  last MAX_STORED_MESSAGES of them (the client sends the conversation itself; the list is
  its history to show, read a page at a time).
- `chat:session:{id}:summaries`: the summary cache (see `context.summaries`).

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
from avatar_shared.pages import Page
from avatar_shared.timestamps import utc_now


def _meta_key(session_id: str) -> str:
    return f"chat:session:{session_id}"


def _messages_key(session_id: str) -> str:
    return f"chat:session:{session_id}:messages"


# Appends one turn atomically and in one round trip; refuses (returns 0) when another user
# owns the session. KEYS: meta, messages, summaries. ARGV: user, model, now, prompt tokens,
# completion tokens, ttl, summary_covered, calibration field, its value ('' when none was
# learned), messages kept at most, then the messages as JSON.
RECORD_TURN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_at', ARGV[3]) end
redis.call('HSET', KEYS[1], 'model', ARGV[2], 'updated_at', ARGV[3],
  'last_prompt_tokens', ARGV[4], 'summary_covered', ARGV[7])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], ARGV[8], ARGV[9]) end
redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'message_count', #ARGV - 10)
redis.call('RPUSH', KEYS[2], unpack(ARGV, 11))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[10]), -1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return 1
"""


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
    def __init__(self, redis: Redis, ttl_s: int, max_messages: int = 1000) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_messages = max_messages
        self._record_turn = redis.register_script(RECORD_TURN)

    async def load(self, session_id: str, user_id: str) -> SessionState:
        """The caller's session in one round trip; empty for a new id; 404 for anyone else's."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(_meta_key(session_id))
            pipe.hgetall(summaries_key(session_id))
            meta, summaries = await pipe.execute()
        if meta.get("owner", user_id) != user_id:
            raise SessionNotFound(session_id)
        return SessionState(meta, parse_summaries(summaries))

    async def check_owner(self, session_id: str, user_id: str) -> None:
        """Passes for a new session id or one of the caller's; 404 for anyone else's."""
        owner = await self.redis.hget(_meta_key(session_id), "owner")  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"
        if owner is not None and owner != user_id:
            raise SessionNotFound(session_id)

    async def record_turn(self, session_id: str, user_id: str, turn: TurnRecord) -> None:
        now = utc_now()
        recorded = await self._record_turn(
            keys=[_meta_key(session_id), _messages_key(session_id), summaries_key(session_id)],
            args=[
                user_id,
                turn.model,
                now,
                turn.prompt_tokens,
                turn.completion_tokens,
                self.ttl_s,
                turn.summary_covered,
                _calibration_field(turn.model),
                "" if turn.calibration is None else f"{turn.calibration:.4f}",
                self.max_messages,
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
        await self.check_owner(session_id, user_id)
        keys = _meta_key(session_id), _messages_key(session_id), summaries_key(session_id)
        if not await self.redis.delete(*keys):
            raise SessionNotFound(session_id)
