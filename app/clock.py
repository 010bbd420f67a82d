"""The time send policies read: when a message is due, whose quiet hours it is, how many messages a
contact had lately, when an A/B test ends, when a scheduled campaign starts; and when a source sync
starts, by which its next connection check falls due.

It is the machine's clock (UTC, naive, as the database stores it). Where `ADJUSTABLE_CLOCK` is set
(tests only; refused in production) every process reads an offset from Redis first, so a test can
move all of them an hour on at once instead of sleeping through it. Leases, rate limits and
timeouts keep the real clock: they measure how long work takes, not what time it is.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from flask import current_app

from app.extensions import redis_client

OFFSET_KEY = "herald:clock:offset"


_last_offset = 0.0  # what this process last read: kept while Redis cannot be reached


def now() -> datetime:
    global _last_offset
    real = datetime.now(UTC).replace(tzinfo=None)
    if not current_app.config["HERALD_SETTINGS"].adjustable_clock:
        return real
    try:
        offset = redis_client().get(OFFSET_KEY)
        _last_offset = float(offset) if offset else 0.0
    except redis.RedisError:
        pass  # an outage must not stop what reads the time (recording outcomes, above all)
    return real + timedelta(seconds=_last_offset)


def set_offset(seconds: float) -> None:
    """Tests: every process's `now()` reads this far ahead of the machine's clock."""
    if not current_app.config["HERALD_SETTINGS"].adjustable_clock:
        raise RuntimeError("The clock can be moved only where ADJUSTABLE_CLOCK is set.")
    redis_client().set(OFFSET_KEY, repr(float(seconds)))


def advance(delta: timedelta) -> datetime:
    """Tests: move every process's clock on by `delta`; the new time."""
    current = redis_client().get(OFFSET_KEY)
    set_offset((float(current) if current else 0.0) + delta.total_seconds())
    return now()
