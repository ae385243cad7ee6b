-- Mark a session closing and return its hash and values, atomically. KEYS: hash. ARGV: data key prefix.
-- Returns {field/value list, token/value list}, or nil when there is no session.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'status', 'closing')
local fields = redis.call('HGETALL', KEYS[1])
local values = {}
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, 2) == 'k:' then
    local value = redis.call('GET', ARGV[1] .. string.sub(field, 3))
    if value then
      values[#values + 1] = string.sub(field, 3)
      values[#values + 1] = value
    end
  end
end
return {fields, values}
