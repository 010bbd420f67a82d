"""Throttles on failed logins and failed ingest keys, counted in Redis and shared by every web process.

Only failures count, in moving windows written in flask-limiter's notation ("5 per minute; 20 per
hour"). The check comes before the attempt: while a client's allowance is used up, even a correct
password or key is not tried, so guessing on past the limit learns nothing. A check is one Redis
round trip; only a failure writes.

Login is throttled so that whoever guesses is kept out, not the account's owner:
- per account and client (LOGIN_RATE_LIMIT_ACCOUNT_CLIENT): a client that keeps failing on one
  account is refused for that account; the owner, on another address, is not;
- per client (LOGIN_RATE_LIMIT_IP): one address guessing across many accounts;
- per account (LOGIN_RATE_LIMIT_ACCOUNT), a ceiling that slows rather than blocks: once the account
  collected that many failures from all clients together (many addresses guessing one account),
  every client's allowance on it shrinks to LOGIN_RATE_LIMIT_ACCOUNT_SLOWED. A client that has not
  failed yet, such as the owner arriving, still gets its attempt.
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import limits
import redis
from flask import current_app

from app.errors import TooManyRequests
from app.extensions import redis_client

log = logging.getLogger(__name__)

KEY_PREFIX = "herald:failures"


@dataclass(frozen=True)
class Window:
    amount: int
    seconds: int


@lru_cache(maxsize=32)
def parse_windows(text: str) -> tuple[Window, ...]:
    """Windows from flask-limiter's notation; ValueError if it is not that."""
    return tuple(Window(item.amount, item.get_expiry()) for item in limits.parse_many(text))


def _windows(setting: str) -> tuple[Window, ...]:
    return parse_windows(current_app.config[setting])


@dataclass(frozen=True)
class _Counter:
    """The recent failures of one who (`key`) under one window of one limit."""

    key: str
    window: Window

    @property
    def redis_key(self) -> str:
        return f"{KEY_PREFIX}:{self.key}:{self.window.seconds}"


def _counters(key: str, setting: str) -> list[_Counter]:
    return [_Counter(key, window) for window in _windows(setting)]


def _used_up(counters: list[_Counter]) -> list[tuple[_Counter, float]]:
    """The counters whose allowance is used up, each with the seconds until it frees up.

    Each keeps only its newest `amount` failure times: it is used up while the oldest of those is
    younger than the window (a moving window, with no reset at a clock boundary)."""
    now = time.time()
    pipe = redis_client().pipeline(transaction=False)
    for counter in counters:
        pipe.zrange(counter.redis_key, -counter.window.amount, -counter.window.amount, withscores=True)
    try:
        oldest = pipe.execute()
    except redis.RedisError:
        # Throttling is a defence, not a dependency: with Redis down, logins and ingest go on.
        log.warning("failure throttle unavailable: Redis unreachable")
        return []
    return [(counter, at + counter.window.seconds - now) for counter, found in zip(counters, oldest)
            for _, at in found if at + counter.window.seconds > now]


def _count_failure(counters: list[_Counter]) -> None:
    now = time.time()
    failure = f"{now:.6f}:{secrets.token_hex(4)}"
    pipe = redis_client().pipeline(transaction=False)
    for counter in counters:
        pipe.zadd(counter.redis_key, {failure: now})
        pipe.zremrangebyrank(counter.redis_key, 0, -counter.window.amount - 1)
        pipe.expire(counter.redis_key, counter.window.seconds + 1)
    try:
        pipe.execute()
    except redis.RedisError:
        log.warning("failure throttle unavailable: Redis unreachable")


def _forget(counters: list[_Counter]) -> None:
    try:
        redis_client().delete(*(counter.redis_key for counter in counters))
    except redis.RedisError:
        log.warning("failure throttle unavailable: Redis unreachable")


def _refuse(waits: list[float], message: str) -> None:
    if waits:
        seconds = max(1, math.ceil(max(waits)))
        raise TooManyRequests(f"{message} Try again in {seconds} s.", headers={"Retry-After": str(seconds)})


# --- Login ---------------------------------------------------------------------------------------

class LoginAttempt:
    """One login attempt's throttles: `admit()` before the password is checked, then `failed()` or
    `succeeded()`. Unknown accounts are counted exactly like known ones (no enumeration)."""

    def __init__(self, email: str, client_ip: str | None) -> None:
        # Hashed: no addresses in Redis.
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        client = client_ip or "unknown"
        self._client = _counters(f"login-ip:{client}", "LOGIN_RATE_LIMIT_IP")
        self._account_client = _counters(f"login:{account}:{client}", "LOGIN_RATE_LIMIT_ACCOUNT_CLIENT")
        self._slowed = _counters(f"login-slowed:{account}:{client}", "LOGIN_RATE_LIMIT_ACCOUNT_SLOWED")
        self._account = _counters(f"login-account:{account}", "LOGIN_RATE_LIMIT_ACCOUNT")

    def admit(self) -> None:
        """Raise TooManyRequests (with Retry-After) if this client may not try this account now."""
        used_up = _used_up(self._client + self._account_client + self._slowed + self._account)
        exhausted = {counter for counter, _ in used_up}
        besieged = any(counter in exhausted for counter in self._account)
        applying = set(self._client + self._account_client + (self._slowed if besieged else []))
        _refuse([wait for counter, wait in used_up if counter in applying], "Too many failed logins.")

    def failed(self) -> None:
        _count_failure(self._client + self._account_client + self._slowed + self._account)

    def succeeded(self) -> None:
        # The owner's own typos are forgiven; what the account and the address collected stays.
        _forget(self._account_client + self._slowed)


# --- Ingest keys ---------------------------------------------------------------------------------

def admit_ingest(client_ip: str | None) -> None:
    """Raise TooManyRequests if this client failed ingest authentication too often lately."""
    used_up = _used_up(_counters(f"ingest-ip:{client_ip or 'unknown'}", "INGEST_RATE_LIMIT_IP"))
    _refuse([wait for _, wait in used_up], "Too many failed ingest authentications from this address.")


def ingest_failed(client_ip: str | None) -> None:
    _count_failure(_counters(f"ingest-ip:{client_ip or 'unknown'}", "INGEST_RATE_LIMIT_IP"))
