-- Delete every key of a session. KEYS: hash. ARGV: data key prefix. Returns 1 if the hash was there, else 0.
local removed = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'k:' then
      redis.call('DEL', ARGV[1] .. string.sub(field, 3))
    end
  end
  removed = redis.call('DEL', KEYS[1])
end
return removed
