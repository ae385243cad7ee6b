-- Move a session written before hash tags to its tagged keys (one Redis only: never run on a cluster). KEYS: old hash, new hash. ARGV: old data key prefix, new data key prefix.
-- Keys keep their expiry. Returns 1 when moved, 0 when there is nothing to move or the new hash exists already.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 2) == 'k:' then
    local token = string.sub(field, 3)
    if redis.call('EXISTS', ARGV[1] .. token) == 1 then
      redis.call('RENAME', ARGV[1] .. token, ARGV[2] .. token)
    end
  end
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
