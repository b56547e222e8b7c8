-- quicmatch's matching pool on Redis: every step that changes who waits or
-- who is matched runs here, as one atomic script call.
--
-- KEYS[1] is the pool's hash tag, e.g. "{quicmatch}"; every key below starts
-- with it, so the whole pool lives in one Redis Cluster slot.
-- ARGV[1] names the operation; the rest are its arguments.
--
-- Keys:
--   P:q:0, P:q:1        waiting sessions (male, female): ZSET member -> ticket
--   P:s:<member>        one session: HASH st (i|w|m), g, prof, t, p, mid, init, prev,
--                       stop (the nonce of its last Stop)
--   P:ns:<node>         members a node holds in the pool: SET
--   P:nodes             live nodes: ZSET node -> lease expiry (ms, Redis clock)
--   P:info              what each node announces: HASH node -> JSON
--   P:ticket, P:match   counters (arrival order, match ids)
--   P:epoch             changes only when the pool's data is lost
-- A member is "<node>:<session>". Events for a node's sessions are published
-- to P:inbox:<node>, one message per node per call, as length-prefixed units:
--   W <sid> <position>                     waiting
--   M <sid> <partner> <mid> <1|0> <prof>   matched (1: initiator)
--   D <sid> <mid>                          partner disconnected
--   L <sid> <mid>                          the session left its match

local P = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Waiters a single match attempt examines, at most.
local SCAN_LIMIT = 1024

local function skey(m) return P .. ':s:' .. m end
local function node_of(m) return string.match(m, '^([^:]+):') end
local function sid_of(m) return string.match(m, ':(%d+)$') end

local outbox, order = {}, {}
local quiet_node = nil
local function emit(m, unit)
  local n = node_of(m)
  if n == quiet_node then return end
  if not outbox[n] then
    outbox[n] = {}
    order[#order + 1] = n
  end
  local list = outbox[n]
  list[#list + 1] = #unit .. ':' .. unit
end
local function flush()
  for _, n in ipairs(order) do
    redis.call('PUBLISH', P .. ':inbox:' .. n, table.concat(outbox[n]))
  end
end

-- The highest match id given so far.
local function match_counter()
  return tonumber(redis.call('GET', P .. ':match') or '0')
end

local function alive(n)
  local lease = redis.call('ZSCORE', P .. ':nodes', n)
  return lease ~= false and lease ~= nil and tonumber(lease) >= now
end

-- Matches an idle session with the longest-waiting eligible partner of the
-- opposite queue, or queues it at the back of its own.
local function enqueue(m, g, prof)
  local k = skey(m)
  local prev = redis.call('HGET', k, 'prev')
  local other = P .. ':q:' .. (1 - g)
  local found, start = nil, 0
  while not found and start < SCAN_LIMIT do
    local batch = redis.call('ZRANGE', other, start, start + 63)
    if #batch == 0 then break end
    for _, c in ipairs(batch) do
      if c ~= prev and alive(node_of(c)) and redis.call('HGET', skey(c), 'prev') ~= m then
        found = c
        break
      end
    end
    start = start + 64
  end
  if found then
    redis.call('ZREM', other, found)
    local mid = redis.call('INCR', P .. ':match')
    local theirs = redis.call('HGET', skey(found), 'prof')
    redis.call('HSET', skey(found), 'st', 'm', 'p', m, 'mid', mid, 'init', '1')
    redis.call('HSET', k, 'st', 'm', 'p', found, 'mid', mid, 'init', '0', 'g', g, 'prof', prof)
    emit(found, 'M ' .. sid_of(found) .. ' ' .. m .. ' ' .. mid .. ' 1 ' .. prof)
    emit(m, 'M ' .. sid_of(m) .. ' ' .. found .. ' ' .. mid .. ' 0 ' .. theirs)
  else
    local ticket = redis.call('INCR', P .. ':ticket')
    local own = P .. ':q:' .. g
    redis.call('ZADD', own, ticket, m)
    redis.call('HSET', k, 'st', 'w', 't', ticket, 'g', g, 'prof', prof)
    emit(m, 'W ' .. sid_of(m) .. ' ' .. redis.call('ZCARD', own))
  end
end

-- Ends m's match: m is idle, its partner idle and told. Returns the partner,
-- its gender and profile, or nil.
local function end_match(m)
  local k = skey(m)
  local h = redis.call('HMGET', k, 'st', 'p', 'mid')
  if h[1] ~= 'm' then return nil end
  local partner, mid = h[2], h[3]
  redis.call('HSET', k, 'st', 'i', 'prev', partner)
  redis.call('HDEL', k, 'p', 'mid', 'init')
  emit(m, 'L ' .. sid_of(m) .. ' ' .. mid)
  local pk = skey(partner)
  local ph = redis.call('HMGET', pk, 'st', 'p', 'mid', 'g', 'prof')
  if ph[1] ~= 'm' or ph[2] ~= m or ph[3] ~= mid then return nil end
  redis.call('HSET', pk, 'st', 'i', 'prev', m)
  redis.call('HDEL', pk, 'p', 'mid', 'init')
  emit(partner, 'D ' .. sid_of(partner) .. ' ' .. mid)
  return { partner, tonumber(ph[4]), ph[5] }
end

-- The one left behind gets the first chance at someone new, if its node lives.
local function requeue_partner(left)
  if left and alive(node_of(left[1])) then enqueue(left[1], left[2], left[3]) end
end

local function leave(m)
  local k = skey(m)
  local h = redis.call('HMGET', k, 'st', 'g')
  if h[1] == 'w' then
    redis.call('ZREM', P .. ':q:' .. h[2], m)
    redis.call('HSET', k, 'st', 'i')
  elseif h[1] == 'm' then
    requeue_partner(end_match(m))
  end
end

local function disconnect(m)
  leave(m)
  redis.call('DEL', skey(m))
  redis.call('SREM', P .. ':ns:' .. node_of(m), m)
end

-- Removes every session of node n as if each had disconnected.
local function reap(n)
  local members = redis.call('SMEMBERS', P .. ':ns:' .. n)
  for _, m in ipairs(members) do disconnect(m) end
  redis.call('DEL', P .. ':ns:' .. n)
  redis.call('ZREM', P .. ':nodes', n)
  redis.call('HDEL', P .. ':info', n)
  return #members
end

local op = ARGV[1]

if op == 'join' then
  -- ARGV: member, gender (0|1), profile
  local m = ARGV[2]
  local st = redis.call('HGET', skey(m), 'st')
  if st == 'w' or st == 'm' then return 'already' end
  redis.call('SADD', P .. ':ns:' .. node_of(m), m)
  enqueue(m, tonumber(ARGV[3]), ARGV[4])
  flush()
  return 'ok'
elseif op == 'stop' then
  -- ARGV: member, nonce. A call repeated with the same nonce (its first
  -- answer timed out, yet it may have run) does nothing the second time.
  local m = ARGV[2]
  local k = skey(m)
  local h = redis.call('HMGET', k, 'st', 'g', 'prof', 'stop')
  if (h[1] == 'w' or h[1] == 'm') and ARGV[3] then
    if h[4] == ARGV[3] then return 'ok' end
    redis.call('HSET', k, 'stop', ARGV[3])
  end
  if h[1] == 'w' then
    emit(m, 'W ' .. sid_of(m) .. ' ' .. (redis.call('ZRANK', P .. ':q:' .. h[2], m) + 1))
  elseif h[1] == 'm' then
    requeue_partner(end_match(m))
    enqueue(m, tonumber(h[2]), h[3])
  else
    return 'notjoined'
  end
  flush()
  return 'ok'
elseif op == 'leave' then
  -- Returns the highest match id given so far: any match of the session
  -- that its node hears of late (published before this call) has an id up
  -- to it, and any later one a higher id.
  leave(ARGV[2])
  flush()
  return match_counter()
elseif op == 'disconnect' then
  -- Returns as 'leave' does.
  disconnect(ARGV[2])
  flush()
  return match_counter()
elseif op == 'heartbeat' then
  -- ARGV: node, lease (ms), info (JSON), proposed epoch, may reap (0|1)
  -- Returns: epoch, lost (0|1), male queue, female queue, reaped sessions,
  -- then node, info pairs of every live node.
  local n = ARGV[2]
  redis.call('SET', P .. ':epoch', ARGV[5], 'NX')
  local epoch = redis.call('GET', P .. ':epoch')
  -- Lost: this node had no lease left (it was reaped, or never registered).
  local lost = 0
  if redis.call('ZSCORE', P .. ':nodes', n) == false then lost = 1 end
  redis.call('ZADD', P .. ':nodes', now + tonumber(ARGV[3]), n)
  redis.call('HSET', P .. ':info', n, ARGV[4])
  local reaped = 0
  if ARGV[6] == '1' then
    for _, dead in ipairs(redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', '(' .. now)) do
      reaped = reaped + reap(dead)
    end
  end
  flush()
  local out = { epoch, lost, redis.call('ZCARD', P .. ':q:0'), redis.call('ZCARD', P .. ':q:1'), reaped }
  local live = redis.call('ZRANGEBYSCORE', P .. ':nodes', now, '+inf')
  for _, l in ipairs(live) do
    out[#out + 1] = l
    out[#out + 1] = redis.call('HGET', P .. ':info', l) or '{}'
  end
  return out
elseif op == 'forget' then
  -- ARGV: node. The node was reaped while away: its leftovers go, quietly
  -- for itself (it tells its own sessions), as disconnects for the rest.
  quiet_node = ARGV[2]
  for _, m in ipairs(redis.call('SMEMBERS', P .. ':ns:' .. ARGV[2])) do disconnect(m) end
  redis.call('DEL', P .. ':ns:' .. ARGV[2])
  flush()
  return 'ok'
elseif op == 'restore' then
  -- After the pool lost its data: a node writes back what it holds.
  -- ARGV: node, highest match id it has seen, lease (ms), then per session 7 values:
  -- member, state (w|m), gender, profile, partner, match id, initiator (1|0).
  local n = ARGV[2]
  local seen = tonumber(ARGV[3])
  if match_counter() < seen then
    redis.call('SET', P .. ':match', seen)
  end
  for i = 5, #ARGV, 7 do
    local m, st, g = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    redis.call('SADD', P .. ':ns:' .. n, m)
    if st == 'w' then
      local ticket = redis.call('INCR', P .. ':ticket')
      redis.call('ZADD', P .. ':q:' .. g, ticket, m)
      redis.call('HSET', skey(m), 'st', 'w', 't', ticket, 'g', g, 'prof', ARGV[i + 3])
    else
      local partner = ARGV[i + 4]
      redis.call('HSET', skey(m), 'st', 'm', 'g', g, 'prof', ARGV[i + 3],
        'p', partner, 'mid', ARGV[i + 5], 'init', ARGV[i + 6])
      -- The partner's node must restore it too, or be reaped with it (which
      -- tells this side): until then it stands matched as this side says.
      local pn = node_of(partner)
      if redis.call('EXISTS', skey(partner)) == 0 then
        redis.call('HSET', skey(partner), 'st', 'm', 'g', 1 - tonumber(g), 'prof', '',
          'p', m, 'mid', ARGV[i + 5], 'init', 1 - tonumber(ARGV[i + 6]))
      end
      redis.call('ZADD', P .. ':nodes', 'NX', now + tonumber(ARGV[4]), pn)
      redis.call('SADD', P .. ':ns:' .. pn, partner)
    end
  end
  return 'ok'
elseif op == 'states' then
  -- ARGV: members. Returns per member: st, partner, mid, init or queue
  -- position, partner's profile.
  local out = {}
  for i = 2, #ARGV do
    local h = redis.call('HMGET', skey(ARGV[i]), 'st', 'p', 'mid', 'init', 'g')
    local theirs, fourth = '', h[4] or ''
    if h[1] == 'm' then theirs = redis.call('HGET', skey(h[2]), 'prof') or '' end
    if h[1] == 'w' then fourth = tostring((redis.call('ZRANK', P .. ':q:' .. h[5], ARGV[i]) or 0) + 1) end
    out[#out + 1] = h[1] or ''
    out[#out + 1] = h[2] or ''
    out[#out + 1] = h[3] or ''
    out[#out + 1] = fourth
    out[#out + 1] = theirs
  end
  return out
elseif op == 'depart' then
  -- ARGV: node. A draining node leaves discovery at once.
  redis.call('HDEL', P .. ':info', ARGV[2])
  return 'ok'
elseif op == 'retire' then
  -- ARGV: node. A node that shut down cleanly is no longer waited for.
  reap(ARGV[2])
  flush()
  return 'ok'
end
return redis.error_reply('unknown operation ' .. tostring(op))
