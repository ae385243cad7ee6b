-- Key rotation's compare-and-set. KEYS: hash, data keys. ARGV: n, n (field, old, new) triples for the hash, then (old, new) per data key.
-- A value changed meanwhile was written under the new key already, so it is skipped. Returns how many were replaced.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
local i = 2
local changed = 0
for _ = 1, n do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    changed = changed + 1
  end
  i = i + 3
end
for k = 2, #KEYS do
  if redis.call('GET', KEYS[k]) == ARGV[i] then
    redis.call('SET', KEYS[k], ARGV[i + 1], 'KEEPTTL')
    changed = changed + 1
  end
  i = i + 2
end
return changed
