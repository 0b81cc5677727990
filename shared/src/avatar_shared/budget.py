"""Global budgets per kind of user data: the Redis room each kind (characters, personas,
memories, conversations, the audio index, 3D jobs) may fill, a share of REDIS_MAXMEMORY (`SHARES`).

Per-user quotas bound one caller; these bound everyone together, so that many callers (or
many addresses) filling one kind cannot take the room sessions, rate windows and admission
need: a full kind refuses new data of that kind only (503 `storage_full`), and chat, sign-in
and reads go on.

Keys of a kind:
- `budget:{kind}:total`: the bytes its holders hold;
- `budget:{kind}:held`: holder -> bytes (a holder is whatever a store charges: a user's
  records, a conversation...);
- `budget:{kind}:until`: holder -> when its data expires (Unix seconds; `inf` for data kept
  until deleted). Data that expires by a TTL gives its bytes back when the next write of the
  kind sweeps it (`budget_sweep`), so the total never drifts upward with expired data.

The Lua functions are meant for a store's own write script (so its quota, the budget and the
write are one atomic step); `Budget.reserve`/`release` run them alone for a store that writes
in Python. A store's own script passes `Budget.keys` and `Budget.limit` and calls
`budget_sweep`, `budget_fits` and `budget_hold` with the time by Redis's clock.
"""

import math
import time

from redis.asyncio import Redis
from redis.typing import EncodableT

from avatar_shared.errors import StorageFull

# Of REDIS_MAXMEMORY. The rest (about 40%) is for what must always have room: sessions and
# refresh tokens, rate windows, admission, the summary cache, the job queue.
SHARES = {
    "characters": 0.25,
    "personas": 0.02,
    "memories": 0.03,
    "conversations": 0.25,
    "audio": 0.03,
    "jobs": 0.05,
}
SWEEP_BATCH = 64  # expired holders given back per write: bounded work in every script

# KEYS of a kind, in this order, in any script using them: total, held, until.
BUDGET_FUNCTIONS = f"""
local function budget_sweep(total, held, until_key, now)
  local gone = redis.call('ZRANGEBYSCORE', until_key, '-inf', now, 'LIMIT', 0, {SWEEP_BATCH})
  for _, holder in ipairs(gone) do
    local size = tonumber(redis.call('HGET', held, holder) or '0')
    redis.call('HDEL', held, holder)
    redis.call('ZREM', until_key, holder)
    if redis.call('DECRBY', total, size) <= 0 then redis.call('DEL', total) end
  end
end
local function budget_fits(total, size, limit)
  return size <= 0 or tonumber(redis.call('GET', total) or '0') + size <= limit
end
local function budget_hold(total, held, until_key, holder, delta, expires)
  local now_held = redis.call('HINCRBY', held, holder, delta)
  local now_total = redis.call('INCRBY', total, delta)
  if now_held <= 0 then
    redis.call('HDEL', held, holder)
    redis.call('ZREM', until_key, holder)
    now_total = redis.call('DECRBY', total, now_held)  -- never below what is held
  elseif delta > 0 then
    redis.call('ZADD', until_key, expires, holder)  -- a write sets (or renews) the expiry
  end
  if now_total <= 0 then redis.call('DEL', total) end
end
"""

# KEYS: total, held, until. ARGV: holder, delta, expires, limit, now.
# Returns 1 when held (or a release), 0 when the kind is full.
RESERVE = (
    BUDGET_FUNCTIONS
    + """
local delta = tonumber(ARGV[2])
budget_sweep(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[5]))
if not budget_fits(KEYS[1], delta, tonumber(ARGV[4])) then return 0 end
budget_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1], delta, ARGV[3])
return 1
"""
)

KEEP = "inf"  # the expiry of data kept until deleted


class KindFull(StorageFull):
    message = "This kind of data has filled its share of the data store; nothing was stored."


class Budget:
    """One kind's budget: `limit` bytes, its share of REDIS_MAXMEMORY."""

    def __init__(self, redis: Redis, kind: str, redis_maxmemory_bytes: int) -> None:
        self.redis, self.kind = redis, kind
        self.limit = int(SHARES[kind] * redis_maxmemory_bytes)
        self._reserve = redis.register_script(RESERVE)

    @property
    def keys(self) -> list[str]:
        """The kind's keys, in BUDGET_FUNCTIONS' order."""
        return [f"budget:{self.kind}:{part}" for part in ("total", "held", "until")]

    def full(self) -> KindFull:
        return KindFull(
            f"Stored {self.kind} fill their share of the data store ({self.limit} bytes); "
            "nothing was stored. Try again later."
        )

    async def reserve(self, holder: str, size: int, expires_at: float = math.inf) -> None:
        """Charges `size` bytes to `holder`, whose data expires at `expires_at` (Unix
        seconds; inf: kept until deleted), or raises `full()` and charges nothing."""
        args: list[EncodableT] = [holder, size, _expiry(expires_at), self.limit, time.time()]
        if not await self._reserve(keys=self.keys, args=args):
            raise self.full()

    async def release(self, holder: str, size: int) -> None:
        """Gives `size` bytes of `holder`'s back (its data was deleted)."""
        await self._reserve(keys=self.keys, args=[holder, -size, KEEP, self.limit, time.time()])

    async def used(self) -> int:
        return int(await self.redis.get(self.keys[0]) or 0)


def _expiry(expires_at: float) -> str:
    return KEEP if math.isinf(expires_at) else repr(expires_at)
