-- Remove one value of a session. KEYS: hash, data key. ARGV: data key prefix, now, field.
-- Returns {code, session bytes, ttl}: 1 deleted, 0 no such key, -1 no session, -3 closing.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return {-3, 0} end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then return {0, 0} end
local total = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0') - redis.call('STRLEN', KEYS[2])
if total < 0 then total = 0 end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[1], 'bytes', total)
local ttl = refresh()
return {1, total, ttl}
