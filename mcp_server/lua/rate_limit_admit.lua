-- Admit one call below the limit in a sliding window on Redis's clock (refused calls not recorded). KEYS: the key's window. ARGV: limit, window ms, a unique member.
-- Returns {admitted, retry_after_ms}.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, count - limit, 'WITHSCORES')
return {0, tonumber(oldest[#oldest]) + window - now}
