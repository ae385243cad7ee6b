-- Read one value and refresh the session's TTL. KEYS: hash, data key, index sets. ARGV: data key prefix, now, field.
-- Returns {entry, value}, {} when the key is not there, nil when the session is not.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
refresh(3)
local entry = redis.call('HGET', KEYS[1], ARGV[3])
if not entry then return {} end
return {entry, redis.call('GET', KEYS[2])}
