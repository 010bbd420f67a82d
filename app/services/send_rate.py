"""How fast a sender may go, shared by every worker process on every machine, in Redis.

- Rate limits are token buckets: the provider account's `messagesPerSecond` (every campaign on one
  Twilio account, one WhatsApp number, one VAPID key, the SMTP relay draws from one bucket) and a
  campaign channel's own, lower, `messagesPerSecond`. A take draws the same count from every bucket
  that applies, atomically, in one round trip per claim (not per message).
- A hold is the provider's own "slow down" (429 / Retry-After): it stops every sender of the
  account until it passes, not just the one that was told.

Time is Redis' own clock, so workers on machines whose clocks disagree still share fairly.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.extensions import redis_client

# KEYS[1] the account's hold, KEYS[2..] buckets; ARGV[1] wanted, then rate and capacity per bucket.
# Returns {granted, wait_ms}: nothing granted while a hold lasts.
_TAKE = """
local hold = redis.call('PTTL', KEYS[1])
if hold > 0 then return {0, hold} end
local wanted = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tokens = {}
local granted = wanted
for i = 2, #KEYS do
  local rate, capacity = tonumber(ARGV[2 * i - 2]), tonumber(ARGV[2 * i - 1])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local available = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  available = math.min(capacity, available + math.max(0, now - at) * rate)
  tokens[i] = available
  granted = math.min(granted, math.floor(available))
end
local wait_ms = 0
for i = 2, #KEYS do
  local rate, capacity = tonumber(ARGV[2 * i - 2]), tonumber(ARGV[2 * i - 1])
  local left = tokens[i] - granted
  redis.call('HSET', KEYS[i], 'tokens', left, 'at', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / rate * 1000) + 60000)
  if granted < wanted and left < 1 then wait_ms = math.max(wait_ms, math.ceil((1 - left) / rate * 1000)) end
end
return {granted, wait_ms}
"""
# KEYS[1] the hold; ARGV[1] milliseconds. A shorter hold never cuts a longer one short.
_HOLD = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""
_scripts: dict[str, object] = {}


@dataclass(frozen=True)
class Limits:
    """The limits one channel's sending draws on."""

    account_key: str
    account_rate: float | None = None
    channel_key: str | None = None
    channel_rate: float | None = None

    def buckets(self) -> list[tuple[str, float]]:
        found = [(f"herald:rate:{self.account_key}", self.account_rate),
                 (f"herald:rate:{self.channel_key}", self.channel_rate)]
        return [(key, float(rate)) for key, rate in found if rate]

    @property
    def hold_key(self) -> str:
        return f"herald:hold:{self.account_key}"


def _script(source: str):
    client = redis_client()
    if source not in _scripts:
        _scripts[source] = client.register_script(source)
    return _scripts[source], client


def take(limits: Limits, wanted: int) -> tuple[int, float]:
    """(messages allowed now, seconds to wait before asking again)."""
    buckets = limits.buckets()
    script, client = _script(_TAKE)
    # Each bucket holds one second's worth: a burst never exceeds the rate over any second.
    args: list[float] = [wanted]
    for _, rate in buckets:
        args += [rate, max(1.0, rate)]
    granted, wait_ms = script(keys=[limits.hold_key, *(key for key, _ in buckets)], args=args, client=client)
    return int(granted), int(wait_ms) / 1000.0


def hold(limits: Limits, seconds: float) -> None:
    """The provider asked to wait: every sender of the account waits, for at least `seconds`."""
    script, client = _script(_HOLD)
    script(keys=[limits.hold_key], args=[max(1, int(seconds * 1000))], client=client)
