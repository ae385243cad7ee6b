-- Charge a user's query seconds in the current window. KEYS: the user's seconds. ARGV: seconds to add, window ms. Returns the new total.
local used = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return used
