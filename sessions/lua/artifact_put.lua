-- Store an artifact, keeping the user's newest ones only. KEYS: artifact hash, user's list. ARGV: meta, content, ttl, id, max per user, artifact key prefix. Returns 1.
redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'content', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[5]) do
  redis.call('DEL', ARGV[6] .. redis.call('LPOP', KEYS[2]))
end
return 1
