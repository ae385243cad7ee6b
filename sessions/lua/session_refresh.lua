-- Defines refresh(), prepended to session scripts: gives hash KEYS[1] and its data keys (prefix ARGV[1], the same hash slot) the session TTL as of now (ARGV[2]); returns the TTL.
-- The users' index sets live in other slots: the store keeps their expiry (sessions/store.py).
local function refresh()
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
  redis.call('HSET', KEYS[1], 'accessed', ARGV[2], 'expires', tostring(tonumber(ARGV[2]) + ttl))
  redis.call('EXPIRE', KEYS[1], ttl)
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'k:' then
      redis.call('EXPIRE', ARGV[1] .. string.sub(field, 3), ttl)
    end
  end
  return ttl
end
