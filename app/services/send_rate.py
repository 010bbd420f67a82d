"""How fast and how much a sender may send, shared by every worker process on every machine, in Redis.

- Rate limits are token buckets: the provider account's `messagesPerSecond` (every campaign on one
  Twilio account, one WhatsApp number, one VAPID key, the SMTP relay draws from one bucket) and a
  campaign channel's own, lower, `messagesPerSecond`.
- Quotas are the account's `messagesPerHour` / `messagesPerDay`: counts per clock hour and UTC day
  that reset when the next window opens (as relays' sending quotas do).
- A hold is the provider's own "slow down" (429 / Retry-After): it stops every sender of the
  account until it passes, not just the one that was told.

A take draws the same count from every limit that applies, atomically, in one round trip per
claim (not per message); what a claim could not use is given back. Time is Redis' own clock, so
workers on machines whose clocks disagree still share fairly. (Quota keys are built inside the
script from the window's number: one Redis server, not a cluster.)
"""
from __future__ import annotations

from dataclasses import dataclass

from app.extensions import redis_client

HOUR, DAY = 3600, 86400

# KEYS[1] the hold, KEYS[2..] buckets. ARGV[1] wanted, ARGV[2] bucket count, then rate and capacity
# per bucket, then key prefix, window seconds and limit per quota.
# Returns {granted, wait_ms, reason}: reason is why less than wanted was granted (hold, quota, rate).
_TAKE = """
local hold = redis.call('PTTL', KEYS[1])
if hold > 0 then return {0, hold, 'hold'} end
local wanted, buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local granted, wait_ms, reason = wanted, 0, ''
local quotas = {}
for q = 3 + 2 * buckets, #ARGV, 3 do
  local window, limit = tonumber(ARGV[q + 1]), tonumber(ARGV[q + 2])
  local index = math.floor(now / window)
  local key = ARGV[q] .. ':' .. index
  local left = math.max(0, limit - tonumber(redis.call('GET', key) or '0'))
  if left < granted then granted = left end
  if left == 0 then
    reason = 'quota'
    wait_ms = math.max(wait_ms, math.ceil(((index + 1) * window - now) * 1000))
  end
  quotas[#quotas + 1] = {key, window}
end
local tokens = {}
for i = 1, buckets do
  local rate, capacity = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local state = redis.call('HMGET', KEYS[i + 1], 'tokens', 'at')
  local available = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  tokens[i] = math.min(capacity, available + math.max(0, now - at) * rate)
  granted = math.min(granted, math.floor(tokens[i]))
end
for i = 1, buckets do
  local rate, capacity = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local left = tokens[i] - granted
  redis.call('HSET', KEYS[i + 1], 'tokens', left, 'at', now)
  redis.call('PEXPIRE', KEYS[i + 1], math.ceil(capacity / rate * 1000) + 60000)
  if granted < wanted and left < 1 then
    wait_ms = math.max(wait_ms, math.ceil((1 - left) / rate * 1000))
    if reason == '' then reason = 'rate' end
  end
end
for _, quota in ipairs(quotas) do
  if granted > 0 then redis.call('INCRBY', quota[1], granted) end
  redis.call('EXPIRE', quota[1], quota[2] + 60)
end
return {granted, wait_ms, reason}
"""
# Give back what a claim could not use: KEYS buckets; ARGV[1] count, ARGV[2] bucket count, then
# capacity per bucket, then key prefix and window per quota (the current window only).
_GIVE_BACK = """
local count, buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
for i = 1, buckets do
  local tokens = tonumber(redis.call('HGET', KEYS[i], 'tokens'))
  if tokens then redis.call('HSET', KEYS[i], 'tokens', math.min(tonumber(ARGV[2 + i]), tokens + count)) end
end
for q = 3 + buckets, #ARGV, 2 do
  local key = ARGV[q] .. ':' .. math.floor(now / tonumber(ARGV[q + 1]))
  local used = tonumber(redis.call('GET', key) or '0')
  if used > 0 then redis.call('DECRBY', key, math.min(used, count)) end
end
return 1
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
    per_hour: int | None = None
    per_day: int | None = None

    def buckets(self) -> list[tuple[str, float]]:
        found = [(f"herald:rate:{self.account_key}", self.account_rate),
                 (f"herald:rate:{self.channel_key}", self.channel_rate)]
        return [(key, float(rate)) for key, rate in found if rate]

    def quotas(self) -> list[tuple[str, int, int]]:
        found = [(f"herald:quota:{self.account_key}:hour", HOUR, self.per_hour),
                 (f"herald:quota:{self.account_key}:day", DAY, self.per_day)]
        return [(prefix, window, int(limit)) for prefix, window, limit in found if limit]

    @property
    def counted(self) -> bool:
        """Whether any rate or quota applies (a hold always may)."""
        return bool(self.buckets() or self.quotas())

    @property
    def hold_key(self) -> str:
        return f"herald:hold:{self.account_key}"


@dataclass(frozen=True)
class Grant:
    count: int
    wait: float  # seconds before asking again, when less than wanted was granted
    reason: str  # why less: "hold" (the provider asked to wait), "quota", "rate"; "" when all granted


def _script(source: str):
    client = redis_client()
    if source not in _scripts:
        _scripts[source] = client.register_script(source)
    return _scripts[source], client


def take(limits: Limits, wanted: int) -> Grant:
    buckets, quotas = limits.buckets(), limits.quotas()
    script, client = _script(_TAKE)
    # Each bucket holds one second's worth: a burst never exceeds the rate over any second.
    args: list[float | str] = [wanted, len(buckets)]
    for _, rate in buckets:
        args += [rate, max(1.0, rate)]
    for prefix, window, limit in quotas:
        args += [prefix, window, limit]
    granted, wait_ms, reason = script(keys=[limits.hold_key, *(key for key, _ in buckets)], args=args, client=client)
    return Grant(int(granted), int(wait_ms) / 1000.0, reason.decode() if isinstance(reason, bytes) else reason)


def give_back(limits: Limits, count: int) -> None:
    """A claim found fewer rows than it was granted: the rest goes back to every limit."""
    if count <= 0 or not limits.counted:
        return
    buckets, quotas = limits.buckets(), limits.quotas()
    script, client = _script(_GIVE_BACK)
    args: list[float | str] = [count, len(buckets), *(max(1.0, rate) for _, rate in buckets)]
    for prefix, window, _ in quotas:
        args += [prefix, window]
    script(keys=[key for key, _ in buckets], args=args, client=client)


def hold(limits: Limits, seconds: float) -> None:
    """The provider asked to wait: every sender of the account waits, for at least `seconds`."""
    script, client = _script(_HOLD)
    script(keys=[limits.hold_key], args=[max(1, int(seconds * 1000))], client=client)
