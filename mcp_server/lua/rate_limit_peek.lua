-- Would a call be refused now? Same as rate_limit_admit but records nothing. KEYS: the key's window. ARGV: limit, window ms. Returns {admitted, retry_after_ms}.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
if count < limit then
  return {1, 0}
end
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
return {0, tonumber(oldest[2]) + window - now}
