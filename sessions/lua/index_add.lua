-- Add session ids to one user's index set and keep the set at least as long as a session TTL. KEYS: the index set. ARGV: seconds, session ids (none: only the expiry).
-- Never shortens the set's expiry. Returns the set's size.
for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
local remaining = redis.call('TTL', KEYS[1])
if remaining ~= -2 and remaining < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return redis.call('SCARD', KEYS[1])
