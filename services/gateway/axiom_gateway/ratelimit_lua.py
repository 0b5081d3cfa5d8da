"""The exact sliding window, as one Lua script: Redis runs it atomically, in one round trip.

KEYS[1]  the client's window: a sorted set of admitted requests scored by admission time (µs)
ARGV[1]  limit (requests per window)
ARGV[2]  window length in microseconds
ARGV[3]  a random tag, so that two requests admitted in the same microsecond stay two members

Returns {allowed (1|0), remaining, µs until the oldest admitted request leaves the window}.

Time is Redis's own clock (`TIME`), so every gateway replica shares one timeline whatever its
own clock says. A denied request is not recorded: a flood cannot stretch its own lockout.
The key expires one window after the last admission, when every member is out of the window.
"""

from __future__ import annotations

SLIDING_WINDOW_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, now .. ':' .. ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  count = count + 1
  allowed = 1
end

local reset = 0
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, limit - count, reset}
"""
