-- Store one value of a session. KEYS: hash, data key. ARGV: data key prefix, now, field, entry, value, max session bytes, max keys.
-- Returns {1, session bytes, ttl}; {-1, 0} no session, {-3, 0} closing, {-2, bytes} too big, {-4, keys} one key too many (counted only when HLEN says it may be full).
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return {-3, 0} end
local max_keys = tonumber(ARGV[7])
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 and redis.call('HLEN', KEYS[1]) >= max_keys then
  local keys = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'k:' then keys = keys + 1 end
  end
  if keys >= max_keys then return {-4, keys} end
end
local total = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
  - redis.call('STRLEN', KEYS[2]) + string.len(ARGV[5])
if total > tonumber(ARGV[6]) then return {-2, total} end
redis.call('SET', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4], 'bytes', total)
local ttl = refresh()
return {1, total, ttl}
