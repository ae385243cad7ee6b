-- Set a session's status while it exists. KEYS: hash. ARGV: status. Returns 1, or 0 when there is no session.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return 1
