"""Moving windows in Redis, the primitive of every rate: at most `limit` hits in any
`window_s` seconds. Each counted thing is one sorted set, `rate:{name}:{caller}` (member: a
random nonce, score: the time by Redis's own clock), trimmed on every check and expiring with
the window, so a key holds at most `limit` entries and idle callers leave nothing behind. A
refused hit is not counted.

The Lua functions are shared: `HIT` runs them alone (rate.RateLimit, identity's minting
allowance), and a service that must count a hit only when another check passes too (chat's
admission) runs them inside its own script, so the two decisions are one atomic step.
"""

import secrets

# rate_wait(key, limit, window, now): seconds until a hit is allowed, 0 when it is now.
# rate_count(key, window, now, nonce): counts a hit.
RATE_FUNCTIONS = """
local function rate_wait(key, limit, window, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then
    return 0
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
local function rate_count(key, window, now, nonce)
  redis.call('ZADD', key, now, nonce)
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
local function redis_now()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
"""

# KEYS[1] the caller's window; ARGV: limit, window seconds, nonce. Returns the wait (0: counted).
HIT = (
    RATE_FUNCTIONS
    + """
local now = redis_now()
local wait = rate_wait(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if wait == 0 then
  rate_count(KEYS[1], tonumber(ARGV[2]), now, ARGV[3])
end
return tostring(wait)
"""
)


def window_key(name: str, caller: str) -> str:
    return f"rate:{name}:{caller}"


def nonce() -> str:
    """A hit's member in the window: unique, so two hits in one microsecond are both counted."""
    return secrets.token_hex(8)
