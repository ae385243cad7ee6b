-- Refresh the session's TTL, setting a new one if given. KEYS: hash. ARGV: data key prefix, now, new ttl or ''.
-- Returns the TTL, or -1 when there is no session.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ttl', ARGV[3]) end
return refresh()
