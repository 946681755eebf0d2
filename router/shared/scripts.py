"""Lua scripts: each shared update is one atomic script run inside Redis (no read-modify-write races).

Amounts are integer pico-USD kept by HINCRBY (exact int64). Lua compares them as doubles, which are
exact below 2^53 pico-USD (about $9,007); above that a comparison may be off by a few pico-USD.
"""

# KEYS[1] budget hash {spent, reserved}, KEYS[2] open reservations {id: "amount:wall[:owner:tag]"},
# KEYS[3] ids closed before their reservation arrived (see CLOSE); with an owner: KEYS[4] the owner's
# budget ids (set), KEYS[5] every owner (set)
# ARGV amount, limit, id, wall time[, owner, tag, budget id]
# -> {1 reserved | 0 does not fit or was given up, spent, reserved}.
# Idempotent per id: sent twice (a retry after a dropped reply), it reserves once.
RESERVE = """
local spent = redis.call('HGET', KEYS[1], 'spent') or '0'
local reserved = redis.call('HGET', KEYS[1], 'reserved') or '0'
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return {1, spent, reserved} end
if redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return {0, spent, reserved} end
if tonumber(spent) + tonumber(reserved) + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, spent, reserved} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
local entry = ARGV[1] .. ':' .. ARGV[4]
if ARGV[5] and ARGV[5] ~= '' then
  entry = entry .. ':' .. ARGV[5] .. ':' .. ARGV[6]
  redis.call('SADD', KEYS[4], ARGV[7])
  redis.call('SADD', KEYS[5], ARGV[5])
end
redis.call('HSET', KEYS[2], ARGV[3], entry)
return {1, spent, redis.call('HGET', KEYS[1], 'reserved')}  -- the stored string: exact, no float formatting
"""

# A dead owner's reservation, closed by another process: like CLOSE, but only while the owner's lease
# is gone (a live owner keeps its reservations) and without remembering unknown ids.
# KEYS[1..3] as RESERVE, KEYS[4] the owner's lease; ARGV id, actual (or '' to release)
# -> 1 closed now, 0 already closed, -1 the owner is alive
CLOSE_EXPIRED = """
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local open = redis.call('HGET', KEYS[2], ARGV[1])
if not open then return 0 end
local amount = string.sub(open, 1, string.find(open, ':') - 1)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], 86400)
if amount ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount) end
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2]) end
return 1
"""

# Forget a dead owner whose reservations were closed. KEYS[1] its lease, KEYS[2] its budget ids,
# KEYS[3] every owner; ARGV owner -> 1 forgotten, 0 alive again
FORGET_OWNER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

# ARGV id, actual (or '' to release) -> 1 closed now, 0 already closed (settle is idempotent).
# An unknown id is remembered as closed: a reserve that timed out on the client may still reach
# Redis later, and must then be refused instead of holding money nobody will release.
CLOSE = """
local open = redis.call('HGET', KEYS[2], ARGV[1])
if not open then
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[3], 86400)
  return 0
end
local amount = string.sub(open, 1, string.find(open, ':') - 1)
redis.call('HDEL', KEYS[2], ARGV[1])
if amount ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount) end
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2]) end
return 1
"""

# Spend made while Redis was away (budgets running on local state), added once per id.
# KEYS[1] budget hash, KEYS[4] ids already added; ARGV id, amount
ADD_SPENT = """
if redis.call('SADD', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
return 1
"""

# Sliding 60 s window of 1-second buckets. KEYS[1] requests {second: n}, KEYS[2] tokens {second: n}
# ARGV now (s), rpm (0: none), tpm (0: none), tokens to count now
# -> {0} admitted and counted, {wait_ms} refused (nothing counted)
ADMIT = """
local now = tonumber(ARGV[1])
local horizon = now - 59
local function window(key)
  local total, oldest = 0, nil
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local second = tonumber(flat[i])
    if second < horizon then
      redis.call('HDEL', key, flat[i])
    else
      total = total + tonumber(flat[i + 1])
      if oldest == nil or second < oldest then oldest = second end
    end
  end
  return total, oldest
end
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if rpm > 0 then
  local used, oldest = window(KEYS[1])
  if used + 1 > rpm then return {math.max(1, (oldest + 60 - now) * 1000)} end
end
if tpm > 0 then
  local used, oldest = window(KEYS[2])
  if used >= tpm or (used > 0 and used + tokens > tpm) then return {math.max(1, (oldest + 60 - now) * 1000)} end
end
local second = tostring(math.floor(now))
redis.call('HINCRBY', KEYS[1], second, 1)
redis.call('EXPIRE', KEYS[1], 61)
if tokens > 0 then
  redis.call('HINCRBY', KEYS[2], second, tokens)
  redis.call('EXPIRE', KEYS[2], 61)
end
return {0}
"""

# Count tokens after the fact (a key's tpm counts what its answers really used). KEYS[2]; ARGV now, tokens
COUNT_TOKENS = """
redis.call('HINCRBY', KEYS[2], tostring(math.floor(tonumber(ARGV[1]))), ARGV[2])
redis.call('EXPIRE', KEYS[2], 61)
return 1
"""

# A deployment failure. KEYS[1] failure times (zset), KEYS[2] deployment hash
# ARGV now (wall s), window s, allowed fails, cooldown s, unique member, probe ('1': a failed probe)
# -> the deployment's cooldown_until (0: none)
FAIL = """
local now = tonumber(ARGV[1])
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[1])
  local until_ = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[2], 'cooldown_until', until_)
  return tostring(until_)
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  local until_ = now + tonumber(ARGV[4])
  local current = tonumber(redis.call('HGET', KEYS[2], 'cooldown_until') or '0')
  if until_ > current then redis.call('HSET', KEYS[2], 'cooldown_until', until_) end
  return tostring(math.max(until_, current))
end
return redis.call('HGET', KEYS[2], 'cooldown_until') or '0'
"""

# A success: the deployment is healthy (clears failures and any cooldown). KEYS[1], KEYS[2]
SUCCEED = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'cooldown_until', 0)
return 1
"""

# Retry-After: nobody asks the deployment before ARGV[1] (wall s). KEYS[2]
NOT_BEFORE = """
local current = tonumber(redis.call('HGET', KEYS[2], 'not_before') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[2], 'not_before', ARGV[1]) end
return 1
"""

# Latency samples folded into shared EWMAs: n samples of mean m are n EWMA steps of m.
# KEYS[2]; ARGV field, mean, n, alpha
LATENCY = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
local mean, n, alpha = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if not old then
  redis.call('HSET', KEYS[2], ARGV[1], mean)
else
  local keep = (1 - alpha) ^ n
  redis.call('HSET', KEYS[2], ARGV[1], tonumber(old) * keep + mean * (1 - keep))
end
return 1
"""
