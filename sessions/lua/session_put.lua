-- Create a session or bring an archived one back. KEYS: hash. ARGV: data key prefix, now, session id, n, n field/value pairs, token/value pairs.
-- Returns 1, or 0 when the session exists already.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('SET', ARGV[1] .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
refresh()
return 1
