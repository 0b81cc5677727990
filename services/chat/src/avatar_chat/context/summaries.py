"""The summary cache: summaries of a session's older messages, in Redis.

Key `chat:session:{id}:summaries` (a hash that expires with the session): the field is how
many messages, from the start of the conversation, the summary covers; the value is JSON
{digest, content, at}, where digest identifies exactly those messages. A summary is used only
when its digest matches the conversation the client sent, so an edited or deleted early message
makes every summary past it stale, and the conversation is summarized again from the longest
prefix that still matches. Each summary extends the one before it, so no message is summarized
twice while the conversation only grows.
"""

import hashlib
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from avatar_shared.locks import redis_lock

# Older summaries are kept only to survive edits a little way back; beyond that, a rebuild.
KEPT_SUMMARIES = 6

# A summary made in the background is stored only while its session exists: one deleted
# meanwhile must not get its summaries back (for as long as a session's time to live).
# KEYS: the session's hash, its summaries; ARGV: field, value, ttl, stale fields...
SAVE_IF_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 4, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# A failed turn's summaries go when their session does not exist. KEYS: the hash, summaries.
FORGET_ORPHAN = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
"""


def summaries_key(session_id: str) -> str:
    return f"chat:session:{session_id}:summaries"


def session_key(session_id: str) -> str:
    return f"chat:session:{session_id}"  # the session's hash (store.py)


@dataclass(frozen=True)
class Summary:
    covered: int  # the first `covered` messages of the conversation
    digest: str
    content: str
    at: str

    @property
    def exists(self) -> bool:
        return self.covered > 0


NO_SUMMARY = Summary(covered=0, digest="", content="", at="")  # covers nothing


def prefix_digests(messages: Sequence[dict[str, str]]) -> list[str]:
    """digests[n] identifies exactly messages[:n]; digests[0] is the empty conversation."""
    running = hashlib.sha256()
    digests = [running.hexdigest()]
    for message in messages:
        running.update(json.dumps([message["role"], message["content"]]).encode() + b"\n")
        digests.append(running.hexdigest())
    return digests


def parse_summaries(raw: dict[str, str]) -> dict[int, Summary]:
    """The hash as read from Redis; an unreadable entry is skipped (it will be remade)."""
    summaries = {}
    for field, value in raw.items():
        try:
            fields = json.loads(value)
            summaries[int(field)] = Summary(
                int(field), str(fields["digest"]), str(fields["content"]), str(fields["at"])
            )
        except (ValueError, TypeError, KeyError):
            continue
    return summaries


def best_match(summaries: dict[int, Summary], digests: list[str], limit: int) -> Summary:
    """The summary covering the longest prefix of this conversation, of at most `limit`
    turns (a client that went back must still get its recent turns verbatim); NO_SUMMARY
    when none still matches."""
    matching = [s for n, s in summaries.items() if n <= limit and digests[n] == s.digest]
    return max(matching, key=lambda s: s.covered, default=NO_SUMMARY)


class SummaryStore:
    def __init__(self, redis: Redis, ttl_s: int, lock_s: float) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.lock_s = lock_s
        self._save_if_session = redis.register_script(SAVE_IF_SESSION)
        self._forget_orphan = redis.register_script(FORGET_ORPHAN)

    async def load(self, session_id: str) -> dict[int, Summary]:
        key = summaries_key(session_id)
        return parse_summaries(await self.redis.hgetall(key))  # type: ignore[misc]  # redis-py types async commands "Awaitable[T] | T"

    async def save(
        self,
        session_id: str,
        summary: Summary,
        known: dict[int, Summary],
        base: int,
        if_session: bool = False,
    ) -> bool:
        """Stores `summary` (which extends the one covering `base` messages) and drops what
        it replaces: summaries past `base` (stale after an edit) and the oldest beyond
        KEPT_SUMMARIES. `if_session`: only if the session exists (False when it does not):
        a background summary's, and a turn's own when its session existed (deleted during the
        turn, it must not get its summaries back)."""
        stale = [n for n in known if n > base]
        current = sorted([n for n in known if n <= base] + [summary.covered])
        stale += current[:-KEPT_SUMMARIES]
        value = {k: v for k, v in asdict(summary).items() if k != "covered"}
        key, encoded = summaries_key(session_id), json.dumps(value, ensure_ascii=False)
        if if_session:
            keys = [session_key(session_id), key]
            args: list[str | int] = [summary.covered, encoded, self.ttl_s, *stale]
            if not await self._save_if_session(keys=keys, args=args):
                return False
        else:  # a new session's turn: its hash is written with its first reply
            async with self.redis.pipeline(transaction=True) as pipe:
                if stale:
                    pipe.hdel(key, *map(str, stale))
                pipe.hset(key, str(summary.covered), encoded)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        known.update({summary.covered: summary})
        for n in stale:
            known.pop(n, None)
        return True

    async def forget_orphan(self, session_id: str) -> None:
        """Drops the session's summaries if the session itself does not exist."""
        await self._forget_orphan(keys=[session_key(session_id), summaries_key(session_id)])

    def lock(self, session_id: str, wait: bool = True) -> AbstractAsyncContextManager[None]:
        """Held while a session is summarized, so two of its requests (or replicas) never
        both summarize. It expires on its own if its holder dies. `wait=False`: one try
        (LockTimeout when held)."""
        return redis_lock(
            self.redis,
            f"chat:session:{session_id}:summary-lock",
            expire_s=self.lock_s,
            wait_s=self.lock_s if wait else 0,
        )
