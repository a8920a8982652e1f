"""A token bucket in Redis, one for every worker: Celery's own rate_limit is counted by each worker on its own, so
three workers start three times the rate (README: "Rate limits").

Tokens come back at `rate` a second, up to `burst` of them; a call takes one. The script runs inside Redis, whole, on
Redis's clock: two workers never take the same token, and workers on machines whose clocks differ still agree.
"""

# KEYS[1]: the bucket (a hash: tokens, at); ARGV: rate, burst. Returns "0" once a token is taken, else the seconds
# until the next one, as text (Redis would cut a Lua number to an integer).
TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1e6
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = math.min(burst, (tonumber(bucket[1]) or burst) + (now - (tonumber(bucket[2]) or now)) * rate)
if tokens < 1 then
  return tostring((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', now)
redis.call('EXPIRE', KEYS[1], 60)
return '0'
"""


class RateLimited(Exception):
    """No token was free: the call waits for one. Not a failure of the service, so not counted as one (retrying.py)."""


def take_token(client, key, rate, burst=1):
    """Take a token from the bucket `key` on the Redis `client`: 0.0 if one was taken, else the seconds until the
    next one comes."""
    return float(client.register_script(TAKE)(keys=[key], args=[rate, burst]))
