"""A channel's `messagesPerSecond`, shared by every worker process on every machine: a token
bucket in Redis, taken atomically by a Lua script (one round trip per batch, not per message)."""
from __future__ import annotations

import uuid

from app.extensions import redis_client

# KEYS[1] bucket; ARGV: rate (tokens/s), capacity, wanted. Returns {granted, wait_ms}. Time is
# Redis' own clock, so workers on machines whose clocks disagree still share one bucket fairly.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 60000)
local wait_ms = 0
if granted < wanted then wait_ms = math.ceil((1 - (tokens - math.floor(tokens))) / rate * 1000) end
return {granted, wait_ms}
"""
_script = None


def take(channel_id: uuid.UUID, rate: float | None, wanted: int) -> tuple[int, float]:
    """(messages allowed now, seconds to wait before asking again). No rate: everything, now."""
    if not rate:
        return wanted, 0.0
    global _script
    client = redis_client()
    if _script is None:
        _script = client.register_script(_TAKE)
    # A bucket of one second's worth: a burst never exceeds the rate over any second.
    capacity = max(1.0, float(rate))
    granted, wait_ms = _script(keys=[f"herald:rate:channel:{channel_id}"], args=[rate, capacity, wanted],
                               client=client)
    return int(granted), int(wait_ms) / 1000.0
