"""Admission to the chat: one atomic step, shared by every replica, that decides whether a
request may go on to the LLM. In order:

1. the caller's request rate (CHAT_RATE_PER_MIN, a moving minute);
2. the caller's turns in flight: at most LLM_CALLS_PER_USER of one caller's turns are being
   answered at once, and at most LLM_CALLS_PER_ADDRESS of all anonymous callers of one
   client address (ids are free, an address is not). Each admitted turn holds a lease, its
   id in `chat:calls-of:{caller}` (and `chat:calls-of:{address}`) scored by when it expires
   (the longest a turn can take), so a replica that dies mid-turn leaks nothing: its leases
   run out. While the turn runs (its reply, the speech of a streamed reply's sentences)
   its lease, and its hold below, are renewed every quarter of their length, so they last
   until it ends however long its speech takes, and expire soon after a replica dies. A turn
   gives its lease back when it is recorded (`turn_recorded`, inside the store's script: no
   extra round trip) or fails. Background work the caller caused (a summary made ahead, a
   memory reading: `background`) takes only a place the caller's turns leave free: it holds
   a lease of its own (`chat:bg-of:{caller}`, and of the address) while it runs, and is put
   off (left for later) when the caller's turns and background work together are at the
   share. A turn does not count background work: what the caller caused in the background
   never makes their own next turn wait or be refused;
3. the conversations budget (avatar_shared.budget): when stored conversations fill their
   share of Redis, a turn (which would store more) is refused with 503 `storage_full` before
   the LLM is asked, so no reply is generated that could not be kept;
4. the concurrent-session limit: at most MAX_CONCURRENT_USERS sessions active at once
   (`chat:active`: session id -> last seen). A session idle ACTIVE_SESSION_IDLE_S stops
   counting; an active one goes on; a new one needs room;
5. the caller's own share of it: at most MAX_SESSIONS_PER_USER active sessions
   (`chat:active-of:{caller}`), and for anonymous callers at most MAX_SESSIONS_PER_ADDRESS
   of all the ids of their client address together (`chat:active-of:addr:{address}`). A new
   session past either takes the place of the least recently used one of that share, so
   one client (however many ids it mints) cannot fill the limit for everyone else.

A turn of a conversation kept on the server (`hold`) must be its owner's (else 404, as if it
did not exist) and holds it (`chat:session:{id}:busy`, the lease id, expiring with the lease)
until it is recorded or fails: a second turn, an edit or a delete meanwhile answers 409
`conversation_busy`, as the reply is planned from the conversation as it was. A turn that
finds it held waits up to BUSY_WAIT_S for the hold to end first (a stopped reply is saved
just after its stop, when the user's next message often comes).

A refused request costs the caller nothing (no rate, no lease). The whole step is one Lua
script, with Redis's own clock, so it is exact under a burst from many replicas. Redis
unreachable: refused (fail closed), so a broken limiter can never let the GPU be overrun;
it recovers by itself when Redis returns.

The caller is `avatar_shared.rate.Caller`: dropping the anonymous cookie on every request
buys neither a fresh rate budget nor a fresh set of sessions, and minting ids buys no more
of the address's share.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from redis.typing import EncodableT

from avatar_chat.errors import ConversationBusy, SessionNotFound, TooManyUsers
from avatar_shared.budget import BUDGET_FUNCTIONS, Budget
from avatar_shared.rate import Caller, LimiterUnavailable, RateLimited, rate_limited
from avatar_shared.windows import RATE_FUNCTIONS, nonce, window_key

ACTIVE = "chat:active"
RATE_WINDOW_S = 60
# How long a turn waits for its conversation's previous turn to let it go before answering
# 409: a reply stopped by its client is saved in a few ms after the stop, and the user's
# next message often comes in that instant. How often the hold is looked at meanwhile: 10
# looks at most, as a refused turn costs its caller no rate (a turn sent while a long reply
# runs waits its second for nothing).
BUSY_WAIT_S = 1.0
BUSY_POLL_S = 0.1

# KEYS: the active set, the caller's sessions, the caller's rate window, the address's
# sessions, the caller's leases, the address's leases, then the conversations budget (total,
# held, until), the session's busy key and hash. For a signed-in caller, the address's keys
# are the caller's own, unused.
# ARGV: session, idle seconds, limit, per-caller cap, rate limit, rate window, nonce (the
# rate hit's and the lease's id), per-address cap (0: not counted by address), leases per
# caller, leases per address, lease seconds, the budget's limit in bytes, '1' to hold the
# conversation (else ''), the caller's user id.
# Returns {'admitted', 1 if the session was added now else 0}, {'missing', ''},
# {'busy', ''}, {'rate', wait}, {'calls', 'user' or 'address'}, {'storage', ''} or
# {'full', wait}.
ADMIT = (
    RATE_FUNCTIONS
    + BUDGET_FUNCTIONS
    + """
local active, mine, rate, ours = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local calls, our_calls = KEYS[5], KEYS[6]
local session, idle, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, per_window, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local id, address_cap = ARGV[7], tonumber(ARGV[8])
local calls_cap, address_calls_cap = tonumber(ARGV[9]), tonumber(ARGV[10])
local lease_s = tonumber(ARGV[11])
local by_address = address_cap > 0
local hold = ARGV[13] == '1'
if hold then
  if redis.call('HGET', KEYS[11], 'owner') ~= ARGV[14] then return {'missing', ''} end
  if redis.call('EXISTS', KEYS[10]) == 1 then return {'busy', ''} end
end
local now = redis_now()

local wait = rate_wait(rate, per_window, window, now)
if wait > 0 then
  return {'rate', tostring(wait)}
end
redis.call('ZREMRANGEBYSCORE', calls, '-inf', now)  -- leases of turns that never ended
if redis.call('ZCARD', calls) >= calls_cap then
  return {'calls', 'user'}
end
if by_address then
  redis.call('ZREMRANGEBYSCORE', our_calls, '-inf', now)
  if redis.call('ZCARD', our_calls) >= address_calls_cap then
    return {'calls', 'address'}
  end
end
budget_sweep(KEYS[7], KEYS[8], KEYS[9], now)
if not budget_fits(KEYS[7], 1, tonumber(ARGV[12])) then
  return {'storage', ''}
end

-- A full share's least recently used session gives its place to the new one. A share may
-- name sessions that lost their place through the other share: they no longer count.
local function make_room(share, share_cap)
  if redis.call('ZCARD', share) < share_cap then return end
  for _, held in ipairs(redis.call('ZRANGE', share, 0, -1)) do
    if not redis.call('ZSCORE', active, held) then redis.call('ZREM', share, held) end
  end
  if redis.call('ZCARD', share) >= share_cap then
    local replaced = redis.call('ZRANGE', share, 0, 0)[1]
    redis.call('ZREM', active, replaced)
    redis.call('ZREM', mine, replaced)
    redis.call('ZREM', ours, replaced)
  end
end

redis.call('ZREMRANGEBYSCORE', active, '-inf', now - idle)
redis.call('ZREMRANGEBYSCORE', mine, '-inf', now - idle)
if by_address then redis.call('ZREMRANGEBYSCORE', ours, '-inf', now - idle) end
local added = 0
if redis.call('ZSCORE', active, session) then
  -- XX: only a session this caller added is theirs to replace later.
  redis.call('ZADD', mine, 'XX', now, session)
  if by_address then redis.call('ZADD', ours, 'XX', now, session) end
else
  make_room(mine, cap)
  if by_address then make_room(ours, address_cap) end
  if redis.call('ZCARD', active) >= limit then
    local oldest = redis.call('ZRANGE', active, 0, 0, 'WITHSCORES')
    return {'full', tostring(tonumber(oldest[2]) + idle - now)}
  end
  redis.call('ZADD', mine, now, session)
  if by_address then redis.call('ZADD', ours, now, session) end
  added = 1
end
redis.call('EXPIRE', mine, idle)  -- lives while any of the caller's sessions is in use
if by_address then redis.call('EXPIRE', ours, idle) end
redis.call('ZADD', active, now, session)
rate_count(rate, window, now, id)
redis.call('ZADD', calls, now + lease_s, id)
redis.call('EXPIRE', calls, math.ceil(lease_s))
if by_address then
  redis.call('ZADD', our_calls, now + lease_s, id)
  redis.call('EXPIRE', our_calls, math.ceil(lease_s))
end
if hold then redis.call('SET', KEYS[10], id, 'PX', math.ceil(lease_s * 1000)) end
return {'admitted', added}
"""
)

# Ends a turn's lease: the id is removed from each of the lease sets given. For scripts that
# end a turn (the store's record): KEYS from `Lease.keys`, the id from `Lease.id`.
# Ends a turn's hold on its conversation, if it still has it. KEYS: busy. ARGV: the lease id.
LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

# Gives back what a failed turn took, unless its record ended its lease first: a stream its
# client stopped is recorded, then its stop goes on as an exception, and that session exists
# (it keeps its place). KEYS: the lease sets (ARGV[2] of them), the busy key (when ARGV[3] is
# '1'), then the session sets it was added to, if any. ARGV: the lease id, the count of lease
# sets, '1' if it holds busy, the session id.
GIVE_BACK = """
local id, n = ARGV[1], tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
for i = 1, n do redis.call('ZREM', KEYS[i], id) end
local first = n + 1
if ARGV[3] == '1' then
  if redis.call('GET', KEYS[first]) == id then redis.call('DEL', KEYS[first]) end
  first = first + 1
end
for i = first, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
return 1
"""

# Renews a running turn's lease and hold, if they are still its own. KEYS: busy (when ARGV[3]
# is '1'), then the lease sets. ARGV: the lease id, lease seconds, '1' if it holds busy.
RENEW = (
    RATE_FUNCTIONS
    + """
local id, lease_s = ARGV[1], tonumber(ARGV[2])
local first = 1
if ARGV[3] == '1' then
  first = 2
  if redis.call('GET', KEYS[1]) == id then
    redis.call('PEXPIRE', KEYS[1], math.ceil(lease_s * 1000))
  end
end
local now = redis_now()
for i = first, #KEYS do
  if redis.call('ZSCORE', KEYS[i], id) then
    redis.call('ZADD', KEYS[i], now + lease_s, id)
    redis.call('EXPIRE', KEYS[i], math.ceil(lease_s))
  end
end
"""
)

# A background call's lease, if the caller's (and its address's) turns and background calls
# together leave a place. KEYS: pairs of (turns' lease set, background lease set); ARGV: the
# lease id, lease seconds, then each pair's cap. Returns 1 if taken (in the background sets),
# else 0.
TAKE = (
    RATE_FUNCTIONS
    + """
local id, lease_s = ARGV[1], tonumber(ARGV[2])
local now = redis_now()
for i = 1, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
  local used = redis.call('ZCARD', KEYS[i]) + redis.call('ZCARD', KEYS[i + 1])
  if used >= tonumber(ARGV[3 + (i - 1) / 2]) then return 0 end
end
for i = 2, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], now + lease_s, id)
  redis.call('EXPIRE', KEYS[i], math.ceil(lease_s))
end
return 1
"""
)

LEASE_FUNCTIONS = """
local function lease_end(keys, first, id)
  for i = first, #keys do redis.call('ZREM', keys[i], id) end
end
"""


@dataclass(frozen=True)
class Lease:
    """An admitted turn's place among the caller's (and address's) turns in flight."""

    id: str
    keys: tuple[str, ...]  # the lease sets holding it
    holds: str | None = None  # the busy key of the conversation it holds


@dataclass(frozen=True)
class Ticket:
    added: bool  # the session was added to the active ones now (this request's to give back)
    lease: Lease


@dataclass(frozen=True)
class Limits:
    """The admission's numbers (from the settings)."""

    sessions: int  # MAX_CONCURRENT_USERS
    idle_s: int
    sessions_per_user: int
    sessions_per_address: int
    rate_per_min: int
    calls_per_user: int
    calls_per_address: int
    lease_s: float  # the longest a turn can take: its lease runs out then


class Admission:
    def __init__(self, redis: Redis, limits: Limits, budget: Budget) -> None:
        self.redis = redis
        self.limits = limits
        self.budget = budget
        self._admit = redis.register_script(ADMIT)
        self._let_go = redis.register_script(LET_GO)
        self._give_back_script = redis.register_script(GIVE_BACK)
        self._renew = redis.register_script(RENEW)
        self._take = redis.register_script(TAKE)
        self._renewing: set[asyncio.Task[None]] = set()

    async def admit(self, session_id: str, caller: Caller, hold: bool = False) -> Ticket:
        """Admits the request, counting it against the caller's rate and giving it a lease;
        `hold`: a turn of a server conversation, which it holds (see above)."""
        limits, address = self.limits, caller.address_key
        mine, ours = caller.key, address or caller.key
        leases = (calls_of(mine), *([calls_of(ours)] if address else []))
        keys = [ACTIVE, sessions_of(mine), window_key("chat", mine), sessions_of(ours)]
        keys += [calls_of(mine), calls_of(ours), *self.budget.keys]
        busy, meta = f"chat:session:{session_id}:busy", f"chat:session:{session_id}"
        keys += [busy, meta]
        lease_id = turn_lease(session_id)
        args: list[EncodableT] = [session_id, limits.idle_s, limits.sessions]
        args += [limits.sessions_per_user, limits.rate_per_min, RATE_WINDOW_S, lease_id]
        args += [limits.sessions_per_address if address else 0, limits.calls_per_user]
        args += [limits.calls_per_address, limits.lease_s, self.budget.limit]
        args += ["1" if hold else "", caller.user_id]
        try:
            outcome, detail = await self._admit(keys=keys, args=args)  # replies decoded: str
            if outcome == "busy" and await self._let_go_soon(busy):
                outcome, detail = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable() from exc
        if outcome == "admitted":
            return Ticket(int(detail) == 1, Lease(lease_id, leases, busy if hold else None))
        if outcome == "missing":
            raise SessionNotFound(session_id)
        if outcome == "busy":
            raise ConversationBusy()
        if outcome == "rate":
            raise rate_limited(float(detail), limits.rate_per_min, "chat requests", "a minute")
        if outcome == "calls":
            raise self._too_many_calls(detail == "address")
        if outcome == "storage":
            raise self.budget.full()
        retry_after = max(1, math.ceil(float(detail)))
        raise TooManyUsers(
            f"{limits.sessions} chat sessions are active, the most at once. The least "
            f"recently used one stops counting in {retry_after} s unless it is used again; "
            "try again then.",
            headers={"Retry-After": str(retry_after)},
        )

    async def _let_go_soon(self, busy: str) -> bool:
        """Whether the conversation's hold (`busy`) ends within BUSY_WAIT_S. (A refused
        admission costs nothing: waiting, then asking again, is free.)"""
        with anyio.move_on_after(BUSY_WAIT_S):
            # Polled: the turn letting go may be another replica's.
            while await self.redis.exists(busy):  # noqa: ASYNC110
                await asyncio.sleep(BUSY_POLL_S)
            return True
        return False

    def _too_many_calls(self, by_address: bool) -> RateLimited:
        whose = (
            f"{self.limits.calls_per_address} of this address's anonymous callers together"
            if by_address
            else f"{self.limits.calls_per_user} of yours"
        )
        # When one of them ends is not known: Retry-After is a polling interval.
        return RateLimited(
            f"At most {whose} chat requests are answered at once; try again when one of "
            "them has finished.",
            headers={"Retry-After": "1"},
        )

    @asynccontextmanager
    async def turn(
        self, session_id: str, caller: Caller, hold: bool = False
    ) -> AsyncIterator[Lease]:
        """Admitted for the block: its lease, which the turn's record ends. A turn that fails
        in the block gives its lease back, and a session added by it its place: such a
        session does not exist, so an LLM outage (or a client naming session ids it does not
        own) cannot fill the limit. A turn whose record ended its lease gives nothing back
        (a stopped stream is recorded, then its stop goes on): that session exists."""
        ticket = await self.admit(session_id, caller, hold)
        try:
            async with self._renewed(ticket.lease):
                yield ticket.lease
        except BaseException:
            # Shielded: a stream's cancellation (its client left) fires at every await after
            # it, and the lease and hold would stay until they expire (LLM_CALLS_PER_USER
            # places, and the conversation answering 409, for minutes).
            with anyio.CancelScope(shield=True), suppress(RedisError):  # else they expire
                await self._give_back(ticket, session_id, caller)
            raise

    @asynccontextmanager
    async def background(self, caller: str, address: str | None) -> AsyncIterator[bool]:
        """A place among the caller's calls in flight (`caller`: its key; `address`: an
        anonymous caller's address key) for background work it caused, held for the block:
        False when the caller (or its address) has none free, and the work is put off. The
        place is one the caller's turns leave free, and their turns do not count it."""
        holders = (caller, *([address] if address else []))
        pairs = [key for holder in holders for key in (calls_of(holder), background_of(holder))]
        caps = [self.limits.calls_per_user, *([self.limits.calls_per_address] if address else [])]
        lease = Lease(nonce(), tuple(background_of(holder) for holder in holders))
        try:
            taken = await self._take(keys=pairs, args=[lease.id, self.limits.lease_s, *caps])
        except (RedisError, OSError):
            taken = 0  # fail closed: the work waits for a later turn
        if not taken:
            yield False
            return
        try:
            async with self._renewed(lease):
                yield True
        finally:
            with suppress(RedisError, OSError):  # else it expires by itself
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in lease.keys:
                        pipe.zrem(key, lease.id)
                    await pipe.execute()

    @asynccontextmanager
    async def _renewed(self, lease: Lease) -> AsyncIterator[None]:
        """The lease (and its hold) renewed while the block runs."""
        task = asyncio.create_task(self._renew_every(lease))
        self._renewing.add(task)
        task.add_done_callback(self._renewing.discard)
        try:
            yield
        finally:
            task.cancel()

    async def _renew_every(self, lease: Lease) -> None:
        keys = [*([lease.holds] if lease.holds else []), *lease.keys]
        args: list[EncodableT] = [lease.id, self.limits.lease_s, "1" if lease.holds else ""]
        while True:
            await asyncio.sleep(self.limits.lease_s / 4)
            with suppress(RedisError, OSError):  # tried again; else they expire
                await self._renew(keys=keys, args=args)

    async def _give_back(self, ticket: Ticket, session_id: str, caller: Caller) -> None:
        lease = ticket.lease
        keys = [*lease.keys, *([lease.holds] if lease.holds else [])]
        if ticket.added:
            keys += session_sets(caller)
        args: list[EncodableT] = [lease.id, len(lease.keys), "1" if lease.holds else "", session_id]
        await self._give_back_script(keys=keys, args=args)

    async def let_go(self, lease: Lease) -> None:
        """Ends the lease's hold on its conversation (a turn that will not be recorded)."""
        if lease.holds:
            await self._let_go(keys=[lease.holds], args=[lease.id])

    async def active(self) -> int:
        """Sessions that count now (those idle too long are trimmed at the next admission)."""
        since = time.time() - self.limits.idle_s
        active: int = await self.redis.zcount(ACTIVE, f"({since}", "+inf")
        return active

    async def release(self, session_id: str, caller: Caller) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self._release(pipe, session_id, caller)
            await pipe.execute()

    @staticmethod
    def _release(pipe: Pipeline, session_id: str, caller: Caller) -> None:
        for key in session_sets(caller):
            pipe.zrem(key, session_id)


class PutOff(Exception):
    """Background work waits for later: its caller's calls in flight are at their cap."""


def session_sets(caller: Caller) -> list[str]:
    """Where an active session of the caller's counts: the whole limit, the caller's share,
    and an anonymous caller's address's."""
    address = [sessions_of(caller.address_key)] if caller.address_key else []
    return [ACTIVE, sessions_of(caller.key), *address]


def sessions_of(caller: str) -> str:
    return f"chat:active-of:{caller}"


def background_of(caller: str) -> str:
    return f"chat:bg-of:{caller}"


def calls_of(caller: str) -> str:
    return f"chat:calls-of:{caller}"


def turn_lease(session_id: str) -> str:
    """A turn's lease id: a nonce naming its conversation, so that signing in can tell which
    of an anonymous id's conversations have a turn under way (store_scripts.ADOPT)."""
    return f"{nonce()}:{session_id}"


def session_of_lease(lease_id: str) -> str:
    return lease_id.rpartition(":")[2]
