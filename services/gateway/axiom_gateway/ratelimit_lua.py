"""The exact sliding window, as one Lua script: Redis runs it atomically, in one round trip.

One call decides any number of requests (the gateway coalesces the decisions that arrive in
the same event-loop turn into one call); they are decided in order, so two requests of the
same client in one call count against each other exactly as two calls would.

KEYS[i]        the i-th request's window: a sorted set of admitted requests scored by
               admission time (µs)
ARGV[3i-2]     its limit (requests per window)
ARGV[3i-1]     its window length in microseconds
ARGV[3i]       a random tag, so that two requests admitted in the same microsecond stay two
               members

Returns, flattened, {allowed (1|0), remaining, µs until the oldest admitted request leaves the
window} for each request in order.

Time is Redis's own clock (`TIME`), so every gateway replica shares one timeline whatever its
own clock says. A denied request is not recorded: a flood cannot stretch its own lockout.
The key expires one window after the last admission, when every member is out of the window.
"""

from __future__ import annotations

SLIDING_WINDOW_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local allowed = 0
  if count < limit then
    redis.call('ZADD', key, now, now .. ':' .. ARGV[3 * i])
    redis.call('PEXPIRE', key, math.ceil(window / 1000))
    count = count + 1
    allowed = 1
  end
  local reset = 0
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] then
    reset = tonumber(oldest[2]) + window - now
  end
  out[#out + 1] = allowed
  out[#out + 1] = limit - count
  out[#out + 1] = reset
end
return out
"""
