-- Defines refresh(first_index), prepended to session scripts: gives hash KEYS[1], its data keys (prefix ARGV[1]) and index sets KEYS[first_index..] the session TTL as of now (ARGV[2]); returns the TTL.
local function refresh(first_index)
  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
  redis.call('HSET', KEYS[1], 'accessed', ARGV[2], 'expires', tostring(tonumber(ARGV[2]) + ttl))
  redis.call('EXPIRE', KEYS[1], ttl)
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'k:' then
      redis.call('EXPIRE', ARGV[1] .. string.sub(field, 3), ttl)
    end
  end
  for i = first_index, #KEYS do
    local remaining = redis.call('TTL', KEYS[i])
    if remaining ~= -2 and remaining < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
  end
  return ttl
end
