-- Read one value and refresh the session's TTL. KEYS: hash, data key. ARGV: data key prefix, now, field.
-- Returns {ttl, entry, value}, {ttl} when the key is not there, nil when the session is not.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local ttl = refresh()
local entry = redis.call('HGET', KEYS[1], ARGV[3])
if not entry then return {ttl} end
return {ttl, entry, redis.call('GET', KEYS[2])}
