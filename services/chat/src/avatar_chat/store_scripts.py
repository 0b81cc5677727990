"""The session store's Lua scripts (see `store` for the keys they keep). Each write is one
script: the owner check, the change, its holder's counts, the conversations budget, the
library and the expiry together, in one atomic step and one round trip.

Key names are built in the scripts from a session id (one Redis server, as everywhere in
this project, not a cluster): a session evicted or listed is found by the script.
"""

from avatar_chat.limits.admission import LEASE_FUNCTIONS, sessions_of
from avatar_shared.budget import BUDGET_FUNCTIONS
from avatar_shared.identity import ANON_PREFIX
from avatar_shared.rate import address_key

SESSION_OVERHEAD = 1024  # bytes a session is charged beyond its messages: its hash and keys
META = "chat:session:"
STORED_OF = "chat:stored-of:"
LIBRARY = "chat:library:"
KEPT = "chat:kept:"
BUDGET_HOLDER = "chat:"  # the session, as the conversations budget holds it
# Added to a pinned conversation's score in the library, so pinned ones list first (scores
# are Unix seconds, about 1.8e9: pinned ones stay below 1e11, as cursors take them).
PIN_BOOST = 10_000_000_000
# A library with more members than its owner may keep alive is swept of this many of its
# least recently active members whose sessions have expired (bounded work per write).
LIBRARY_SWEEP = 128

FUNCTIONS = (
    BUDGET_FUNCTIONS
    + LEASE_FUNCTIONS
    + """
local function meta_of(id) return 'META' .. id end

-- Where a session is listed: its owner's library, and their library of its character.
local function library_keys(meta)
  local owner = redis.call('HGET', meta, 'owner')
  if not owner then return {} end
  local keys = {'LIBRARY' .. owner}
  local character = redis.call('HGET', meta, 'character_id')
  if character and character ~= '' then keys[2] = 'LIBRARY' .. owner .. ':' .. character end
  return keys
end

-- Lists the session at `active_at` (Unix seconds), pinned ones first. A library past `bound`
-- members sheds those of expired sessions, oldest first; an anonymous owner's library expires
-- with its newest session (`ttl` seconds from now), an account's never (it lists what is
-- kept until deleted).
local function library_touch(meta, id, active_at, ttl, bound)
  local anonymous = string.sub(redis.call('HGET', meta, 'owner') or '', 1, #'ANON_PREFIX')
    == 'ANON_PREFIX'
  redis.call('HSET', meta, 'active_at', active_at)
  local score = tonumber(active_at)
  if redis.call('HGET', meta, 'pinned') == '1' then score = score + PIN_BOOST end
  for _, key in ipairs(library_keys(meta)) do
    redis.call('ZADD', key, score, id)
    if redis.call('ZCARD', key) > bound then
      for _, member in ipairs(redis.call('ZRANGE', key, 0, LIBRARY_SWEEP - 1)) do
        if redis.call('EXISTS', meta_of(member)) == 0 then redis.call('ZREM', key, member) end
      end
    end
    if anonymous and ttl > 0 then redis.call('EXPIRE', key, ttl) end
  end
end

-- Sets the bytes a session's messages take, and charges them: to the conversations budget
-- (until `expires`), and to a kept conversation's owner's kept bytes.
local function session_charge(id, stored, expires, budget_total, budget_held, budget_until)
  local meta = meta_of(id)
  local before = tonumber(redis.call('HGET', meta, 'stored_bytes') or '0')
  redis.call('HSET', meta, 'stored_bytes', stored)
  if redis.call('HGET', meta, 'kept') == '1' then
    redis.call('HINCRBY', 'KEPT' .. redis.call('HGET', meta, 'owner'), 'bytes', stored - before)
  end
  local charged = 'BUDGET_HOLDER' .. id
  local held = tonumber(redis.call('HGET', budget_held, charged) or '0')
  budget_hold(budget_total, budget_held, budget_until, charged, stored + SESSION_OVERHEAD - held,
    expires)
  redis.call('ZADD', budget_until, 'XX', expires, charged)  -- renewed with the keys' TTL
end

-- Forgets a session: its keys, its holder's count of it (or its owner's kept counts), its
-- place in the library, and its bytes given back to the conversations budget.
local function session_forget(id, budget_total, budget_held, budget_until)
  local meta = meta_of(id)
  local holder = redis.call('HGET', meta, 'holder')
  if holder then redis.call('ZREM', 'STORED_OF' .. holder, id) end
  for _, key in ipairs(library_keys(meta)) do redis.call('ZREM', key, id) end
  if redis.call('HGET', meta, 'kept') == '1' then
    local kept = 'KEPT' .. redis.call('HGET', meta, 'owner')
    redis.call('HINCRBY', kept, 'count', -1)
    local bytes = tonumber(redis.call('HGET', meta, 'stored_bytes') or '0')
    redis.call('HINCRBY', kept, 'bytes', 0 - bytes)  -- not -bytes: Lua writes -0 for 0
  end
  redis.call('DEL', meta, meta .. ':messages', meta .. ':summaries', meta .. ':busy')
  local charged = 'BUDGET_HOLDER' .. id
  local size = tonumber(redis.call('HGET', budget_held, charged) or '0')
  if size > 0 then  -- 0 - size, not -size: Lua writes -0 for 0, which Redis refuses
    budget_hold(budget_total, budget_held, budget_until, charged, 0 - size, 'inf')
  end
end

-- The stored session to make room with: one no longer the holder's (gone, or moved) costs
-- nothing; else the oldest not generating a reply (its turn would be lost). An account's are
-- all its own. An address's anonymous ids share its cap: the oldest of the id holding the
-- most there goes (the incoming session counted as its owner's), so one that keeps many gives
-- up its own before a neighbour that keeps few, and a newcomer has room to grow to an equal
-- share. (An account reads one by one, oldest first; an address's are few: read at once.)
-- `spare` (or nil) is never chosen: the conversation a branch is made from.
local function evictable(stored_of, holder, owner, account, spare)
  if account then
    local index = 0
    while true do
      local member = redis.call('ZRANGE', stored_of, index, index)[1]
      if not member then return nil end
      local its = meta_of(member)
      if member ~= spare then
        if redis.call('HGET', its, 'holder') ~= holder then return member end
        if redis.call('EXISTS', its .. ':busy') == 0 then return member end
      end
      index = index + 1
    end
  end
  local held, oldest, at = {[owner] = 1}, {}, {}
  for index, member in ipairs(redis.call('ZRANGE', stored_of, 0, -1)) do
    local its = meta_of(member)
    if member ~= spare and redis.call('HGET', its, 'holder') ~= holder then return member end
    local its_owner = redis.call('HGET', its, 'owner') or ''
    held[its_owner] = (held[its_owner] or 0) + 1
    if not oldest[its_owner] and member ~= spare and redis.call('EXISTS', its .. ':busy') == 0 then
      oldest[its_owner], at[its_owner] = member, index
    end
  end
  local most = nil  -- the id holding the most; of equals, the one whose oldest is oldest
  for its_owner in pairs(oldest) do
    if not most or held[its_owner] > held[most]
        or (held[its_owner] == held[most] and at[its_owner] < at[most]) then
      most = its_owner
    end
  end
  return most and oldest[most]
end

-- Makes the session (of `owner`'s) one of its holder's stored (expiring) sessions, scored by
-- when it expires: expired ones leave the count; a session new to it past `cap` makes room
-- by deleting one of the holder's (`evictable`, never `spare`), whose active place goes with it.
local function holder_take(id, holder, owner, cap, stored_of, active, now, expires, bt, bh, bu,
                           spare)
  local meta = meta_of(id)
  local was = redis.call('HGET', meta, 'holder')
  if was and was ~= holder then  -- an anonymous id's session continued from another address
    redis.call('ZREM', 'STORED_OF' .. was, id)
  end
  redis.call('HSET', meta, 'holder', holder)
  -- Expired sessions leave the count, and an account's list (an address's count, and an
  -- anonymous caller's list, expire with their newest session).
  local account = string.sub(holder, 1, #'ADDRESS_KEY') ~= 'ADDRESS_KEY'
  local expired = redis.call('ZRANGEBYSCORE', stored_of, '-inf', now)
  if #expired > 0 and account then redis.call('ZREM', 'LIBRARY' .. holder, unpack(expired)) end
  redis.call('ZREMRANGEBYSCORE', stored_of, '-inf', now)
  if not redis.call('ZSCORE', stored_of, id) then
    local count = redis.call('ZCARD', stored_of)
    while count >= cap do
      local oldest = evictable(stored_of, holder, owner, account, spare)
      if not oldest then break end  -- every one is generating a reply, or spared
      local its = meta_of(oldest)
      if redis.call('HGET', its, 'holder') == holder then
        local its_owner = redis.call('HGET', its, 'owner')
        session_forget(oldest, bt, bh, bu)
        redis.call('ZREM', active, oldest)  -- its place, and in the shares that count it
        if its_owner then redis.call('ZREM', 'ACTIVE_OF' .. its_owner, oldest) end
        redis.call('ZREM', 'ACTIVE_OF' .. holder, oldest)
      end
      redis.call('ZREM', stored_of, oldest)
      count = count - 1
    end
  end
  redis.call('ZADD', stored_of, expires, id)
  if not account then redis.call('EXPIRE', stored_of, math.ceil(expires - now)) end
end

-- The session's keys expire `ttl` seconds from now, or never (a kept conversation; its
-- summaries are a cache and still expire).
local function session_expire(meta, ttl)
  if redis.call('HGET', meta, 'kept') == '1' then
    redis.call('PERSIST', meta)
    redis.call('PERSIST', meta .. ':messages')
  else
    redis.call('EXPIRE', meta, ttl)
    redis.call('EXPIRE', meta .. ':messages', ttl)
  end
  redis.call('EXPIRE', meta .. ':summaries', ttl)
end

local function clock()  -- to the microsecond: it orders sessions
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
"""
)


def _named(script: str) -> str:
    for placeholder, value in (
        ("SESSION_OVERHEAD", str(SESSION_OVERHEAD)),
        ("LIBRARY_SWEEP", str(LIBRARY_SWEEP)),
        ("PIN_BOOST", str(PIN_BOOST)),
        ("STORED_OF", STORED_OF),
        ("BUDGET_HOLDER", BUDGET_HOLDER),
        ("ACTIVE_OF", sessions_of("")),
        ("LIBRARY", LIBRARY),
        ("KEPT", KEPT),
        ("META", META),
        ("ANON_PREFIX", ANON_PREFIX),
        ("ADDRESS_KEY", address_key("")),
    ):
        script = script.replace(placeholder, value)
    return script


# Appends a turn (or replaces the last message: a regenerate, a continue) and ends the turn's
# lease and its hold on the conversation; refuses when another user owns the session (0) or
# the last message is not the one the turn was planned from (-1). A session whose history its
# client sends keeps the newest messages within the caps (the turn just recorded always); a
# kept conversation is never trimmed (turns past its caps are refused before they begin).
# KEYS: meta, messages, summaries, the budget's total, held, until, the holder's stored
# sessions, the active sessions, busy, then the lease sets.
# ARGV: 1 user, 2 model, 3 now (ISO), 4 prompt tokens (0: not counted), 5 completion tokens, 6 ttl,
# 7 summary_covered, 8 calibration field, 9 its value ('' when none was learned), 10 messages
# kept at most, 11 bytes kept at most, 12 the lease id, 13 the session id, 14 the holder,
# 15 the holder's stored sessions at most, 16 the replaced last message ('' none), 17 its
# replacement, 18 title ('' keeps it), 19 preview, 20 character id ('' none), 21 library
# bound, 22 '1' for a turn of a server conversation ('found': a client's record the turn
# found), then the appended messages as JSON.
# Nothing is written (but the lease's end) unless every check passed: a server turn's
# conversation, and a client's record the turn found, must still exist (either may have been
# deleted or evicted meanwhile: a deletion stands), and a client's turn may not write into a
# server conversation.
RECORD_TURN = _named(
    FUNCTIONS
    + """
local meta, messages, busy = KEYS[1], KEYS[2], KEYS[9]
local id, ttl = ARGV[13], tonumber(ARGV[6])
local first_message = 23
lease_end(KEYS, 10, ARGV[12])
if redis.call('GET', busy) == ARGV[12] then redis.call('DEL', busy) end
local owner = redis.call('HGET', meta, 'owner')
if owner and owner ~= ARGV[1] then return 0 end
local server = redis.call('HGET', meta, 'mode') == 'server'
if ARGV[22] == '1' then
  if not server then return 0 end  -- deleted or evicted while the reply was generated
elseif server then
  return -2
elseif ARGV[22] == 'found' and not owner then
  return 0  -- a client's record, deleted or evicted meanwhile: not made anew
end
if ARGV[16] ~= '' and redis.call('LINDEX', messages, -1) ~= ARGV[16] then return -1 end
if not owner then
  redis.call('HSET', meta, 'owner', ARGV[1], 'created_at', ARGV[3])
  if ARGV[20] ~= '' then redis.call('HSET', meta, 'character_id', ARGV[20]) end
end
local kept = redis.call('HGET', meta, 'kept') == '1'
local now = clock()
local expires = now + ttl
if kept then expires = 'inf' else
  holder_take(id, ARGV[14], ARGV[1], tonumber(ARGV[15]), KEYS[7], KEYS[8], now, expires,
    KEYS[4], KEYS[5], KEYS[6])
end
local stored = tonumber(redis.call('HGET', meta, 'stored_bytes') or '-1')
if stored < 0 then  -- a session stored before the byte cap: counted once
  stored = 0
  for _, one in ipairs(redis.call('LRANGE', messages, 0, -1)) do stored = stored + #one end
end
if ARGV[16] ~= '' then
  redis.call('LSET', messages, -1, ARGV[17])
  stored = stored + #ARGV[17] - #ARGV[16]
end
redis.call('HSET', meta, 'model', ARGV[2], 'updated_at', ARGV[3],
  'summary_covered', ARGV[7], 'preview', ARGV[19])
-- No count (a stopped stream's, a server that reports none): the last one stands.
if tonumber(ARGV[4]) > 0 then redis.call('HSET', meta, 'last_prompt_tokens', ARGV[4]) end
if ARGV[9] ~= '' then redis.call('HSET', meta, ARGV[8], ARGV[9]) end
if ARGV[18] ~= '' then redis.call('HSETNX', meta, 'title', ARGV[18]) end
redis.call('HINCRBY', meta, 'prompt_tokens', ARGV[4])
redis.call('HINCRBY', meta, 'completion_tokens', ARGV[5])
local new = #ARGV - first_message + 1
if new > 0 then
  redis.call('HINCRBY', meta, 'message_count', new)
  for i = first_message, #ARGV do stored = stored + #ARGV[i] end
  local count = redis.call('RPUSH', messages, unpack(ARGV, first_message))
  while not server and count > new
      and (count > tonumber(ARGV[10]) or stored > tonumber(ARGV[11])) do
    stored = stored - #redis.call('LPOP', messages)
    count = count - 1
  end
end
session_charge(id, stored, expires, KEYS[4], KEYS[5], KEYS[6])
session_expire(meta, ttl)
library_touch(meta, id, now, ttl, tonumber(ARGV[21]))
return 1
"""
)

# Starts a conversation (a new one, a branch, an import) with its opening messages. A
# signed-in owner's is kept until deleted, within their quota (count and bytes); an anonymous
# owner's expires and counts in its holder's stored sessions.
# KEYS: meta, messages, the budget's total, held, until, the holder's stored sessions, the
# active sessions, the owner's kept counts.
# ARGV: 1 id, 2 owner, 3 now (ISO), 4 ttl, 5 holder ('' when kept), 6 holder cap, 7 kept count
# at most, 8 kept bytes at most, 9 the budget's limit, 10 library bound, 11 the session not
# to evict to make room (a branch's source, or ''), 12 how many field names and values
# follow, then those, then the messages as JSON.
# Returns {'created'}, {'storage'} or {'quota', 'count'|'bytes'}.
CREATE = _named(
    FUNCTIONS
    + """
local meta, messages = KEYS[1], KEYS[2]
local id, ttl = ARGV[1], tonumber(ARGV[4])
local fields_end = 12 + tonumber(ARGV[12])
local stored = 0
for i = fields_end + 1, #ARGV do stored = stored + #ARGV[i] end
local now = clock()
budget_sweep(KEYS[3], KEYS[4], KEYS[5], now)
if not budget_fits(KEYS[3], stored + SESSION_OVERHEAD, tonumber(ARGV[9])) then
  return {'storage'}
end
local kept = ARGV[5] == ''
local expires = now + ttl
if kept then
  expires = 'inf'
  local count = tonumber(redis.call('HGET', KEYS[8], 'count') or '0')
  local bytes = tonumber(redis.call('HGET', KEYS[8], 'bytes') or '0')
  if count >= tonumber(ARGV[7]) then return {'quota', 'count'} end
  if bytes + stored > tonumber(ARGV[8]) then return {'quota', 'bytes'} end
  redis.call('HINCRBY', KEYS[8], 'count', 1)
end
if not kept then
  holder_take(id, ARGV[5], ARGV[2], tonumber(ARGV[6]), KEYS[6], KEYS[7], now, expires,
    KEYS[3], KEYS[4], KEYS[5], ARGV[11])
end
redis.call('HSET', meta, 'owner', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[3],
  'mode', 'server', 'message_count', #ARGV - fields_end)
if kept then redis.call('HSET', meta, 'kept', '1') end
if fields_end > 12 then redis.call('HSET', meta, unpack(ARGV, 13, fields_end)) end
if #ARGV > fields_end then redis.call('RPUSH', messages, unpack(ARGV, fields_end + 1)) end
session_charge(id, stored, expires, KEYS[3], KEYS[4], KEYS[5])
session_expire(meta, ttl)
library_touch(meta, id, now, ttl, tonumber(ARGV[10]))
return {'created'}
"""
)

# Changes one message of a conversation: replaces it (edit, swipe) or removes it (delete),
# provided it is still what the caller read (compare and set: the list is read, changed in
# Python, written here) and no reply is being generated for the conversation.
# KEYS: meta, messages, busy, the budget's total, held, until, the owner's kept counts.
# ARGV: 1 user, 2 the session id, 3 the message's index, 4 the message as read, 5 its
# replacement ('' deletes it), 6 bytes kept at most, 7 now (ISO), 8 ttl, 9 preview, 10 the
# budget's limit, 11 library bound, 12 the owner's kept bytes at most, 13 '1' when the change
# only shows another of the message's stored alternates (a swipe): never refused for the
# conversation's or the owner's bytes, though the shown text is stored twice (swipes to
# longer alternates may pass them, each message by its longest alternate: at most twice
# what its alternates hold, all stored within them; the next growth is refused as ever).
# Returns 'ok', 'missing', 'client', 'busy', 'changed', 'full', 'quota' or 'storage'.
MUTATE = _named(
    FUNCTIONS
    + """
local meta, messages, busy = KEYS[1], KEYS[2], KEYS[3]
local index, before, after = tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('HGET', meta, 'owner') ~= ARGV[1] then return 'missing' end
if redis.call('HGET', meta, 'mode') ~= 'server' then return 'client' end
if redis.call('EXISTS', busy) == 1 then return 'busy' end
if redis.call('LINDEX', messages, index) ~= before then return 'changed' end
local stored = tonumber(redis.call('HGET', meta, 'stored_bytes') or '0')
local now = clock()
if after == '' then
  redis.call('LREM', messages, 1, before)
  redis.call('HINCRBY', meta, 'message_count', -1)
  stored = stored - #before
else
  local grows = #after - #before
  local choice = ARGV[13] == '1'
  if not choice and stored + grows > tonumber(ARGV[6]) then return 'full' end
  if not choice and grows > 0 and redis.call('HGET', meta, 'kept') == '1' and
      tonumber(redis.call('HGET', KEYS[7], 'bytes') or '0') + grows > tonumber(ARGV[12]) then
    return 'quota'
  end
  budget_sweep(KEYS[4], KEYS[5], KEYS[6], now)
  if not budget_fits(KEYS[4], grows, tonumber(ARGV[10])) then return 'storage' end
  redis.call('LSET', messages, index, after)
  stored = stored + grows
end
-- A summary of a prefix that this change falls in no longer stands for the conversation.
if index < tonumber(redis.call('HGET', meta, 'summary_covered') or '0') then
  redis.call('HSET', meta, 'summary_covered', 0)
end
redis.call('HSET', meta, 'updated_at', ARGV[7], 'preview', ARGV[9])
local ttl = tonumber(ARGV[8])
local expires = now + ttl
local holder = redis.call('HGET', meta, 'holder')
if redis.call('HGET', meta, 'kept') == '1' then
  expires = 'inf'
elseif holder then  -- in use: its holder counts it until it expires
  redis.call('ZADD', 'STORED_OF' .. holder, 'XX', expires, ARGV[2])
end
session_charge(ARGV[2], stored, expires, KEYS[4], KEYS[5], KEYS[6])
session_expire(meta, ttl)
library_touch(meta, ARGV[2], now, ttl, tonumber(ARGV[11]))
return 'ok'
"""
)

# Renames or pins a conversation of the owner's, or sets its memory mode: 0 when there is
# none of theirs, -1 (nothing changed) for a new memory mode while a reply is generated: that
# turn was planned with the mode it found, and what it says is stored as that mode has it
# (flagged or not), so read_only must not begin in its middle. KEYS: meta. ARGV: user, the
# session id, title ('' keeps it), pinned ('1', '0', '' keeps it), ttl, library bound, memory
# ('' keeps it).
RENAME = _named(
    FUNCTIONS
    + """
local meta = KEYS[1]
if redis.call('HGET', meta, 'owner') ~= ARGV[1] then return 0 end
local mode = redis.call('HGET', meta, 'memory')
if not mode or mode == '' then mode = 'on' end
if ARGV[7] ~= '' and ARGV[7] ~= mode and redis.call('EXISTS', meta .. ':busy') == 1 then
  return -1
end
if ARGV[3] ~= '' then redis.call('HSET', meta, 'title', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', meta, 'pinned', ARGV[4]) end
if ARGV[7] ~= '' then redis.call('HSET', meta, 'memory', ARGV[7]) end
local ttl = 0
if redis.call('HGET', meta, 'kept') ~= '1' then ttl = tonumber(ARGV[5]) end
local active_at = redis.call('HGET', meta, 'active_at') or tostring(clock())
library_touch(meta, ARGV[2], active_at, ttl, tonumber(ARGV[6]))
return 1
"""
)

# Deletes a session of its owner's, unless a reply for it is being generated: 1, 0 when there
# is none of theirs, -1 when busy. KEYS: meta, the budget's total, held, until. ARGV: user,
# the session id.
DELETE = _named(
    FUNCTIONS
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1] .. ':busy') == 1 then return -1 end
session_forget(ARGV[2], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)

# Moves one session of an anonymous id's to an account (signing in keeps what the browser
# made, avatar_shared.adoption): a server conversation becomes a kept one within the account's
# quota; a client's record joins the account's expiring sessions while they have room. Past
# either, or while a turn for it is under way (a server conversation's holds it; a client's
# is named by the turn's lease, admission.turn_lease), it stays the anonymous id's (and
# expiring): the turn's record would be refused as another's.
# KEYS: meta, the account's kept counts, the account's stored sessions, the budget's total,
# held, until, the active sessions, the anonymous id's turn leases. ARGV: 1 the anonymous
# id, 2 the account, 3 the session id, 4 kept count at most, 5 kept bytes at most,
# 6 expiring sessions at most, 7 ttl, 8 library bound.
# Returns 'moved', 'kept' or 'gone' (expired, or no longer the anonymous id's).
ADOPT = _named(
    FUNCTIONS
    + """
local meta, kept, stored_of = KEYS[1], KEYS[2], KEYS[3]
local from, to, id, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[7])
if redis.call('HGET', meta, 'owner') ~= from then return 'gone' end
if redis.call('EXISTS', meta .. ':busy') == 1 then return 'kept' end
local now = clock()
for _, lease in ipairs(redis.call('ZRANGEBYSCORE', KEYS[8], now, '+inf')) do
  if string.sub(lease, -(#id + 1)) == ':' .. id then return 'kept' end
end
local server = redis.call('HGET', meta, 'mode') == 'server'
local stored = tonumber(redis.call('HGET', meta, 'stored_bytes') or '0')
if server then
  local count = tonumber(redis.call('HGET', kept, 'count') or '0')
  local bytes = tonumber(redis.call('HGET', kept, 'bytes') or '0')
  if count >= tonumber(ARGV[4]) or bytes + stored > tonumber(ARGV[5]) then return 'kept' end
else
  redis.call('ZREMRANGEBYSCORE', stored_of, '-inf', now)
  if redis.call('ZCARD', stored_of) >= tonumber(ARGV[6]) then return 'kept' end
end
for _, key in ipairs(library_keys(meta)) do redis.call('ZREM', key, id) end
local holder = redis.call('HGET', meta, 'holder')
if holder then redis.call('ZREM', 'STORED_OF' .. holder, id) end
redis.call('HSET', meta, 'owner', to)
local expires = now + ttl
if server then
  redis.call('HDEL', meta, 'holder')
  redis.call('HSET', meta, 'kept', '1', 'stored_bytes', 0)
  redis.call('HINCRBY', kept, 'count', 1)
  expires = 'inf'
else
  holder_take(id, to, to, tonumber(ARGV[6]), stored_of, KEYS[7], now, expires,
    KEYS[4], KEYS[5], KEYS[6])
end
session_charge(id, stored, expires, KEYS[4], KEYS[5], KEYS[6])
session_expire(meta, ttl)
library_touch(meta, id, redis.call('HGET', meta, 'active_at') or tostring(now), 0,
  tonumber(ARGV[8]))
return 'moved'
"""
)
