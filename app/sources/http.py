"""Outbound HTTP to provider APIs: timeouts, retries with backoff and jitter, and one error vocabulary.

Connectors send through `send()`, which retries what is worth retrying inside the call (network
errors, timeouts, 5xx, 429 with its Retry-After, and whatever provider-specific answer the connector
marks as transient) and raises `TransientProviderError` when the attempts run out, so the caller can
retry later as a whole. 401/403 raise `CredentialsRejected` at once: retrying a refused token only
gets an account flagged. Messages are written for merchants and logs alike and never carry a secret
(tokens travel in headers, never in URLs, and neither headers nor bodies are logged).
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

log = logging.getLogger(__name__)

REASON_MAX = 500


class ProviderError(Exception):
    """The provider could not do what was asked; `str()` is a readable reason without secrets.

    Raised as such it is permanent for this run (retrying will not help) but says nothing about the
    source's configuration, e.g. a query the provider no longer accepts.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason[:REASON_MAX])


class TransientProviderError(ProviderError):
    """Worth trying again later: the provider was down, slow or rate limiting beyond our patience."""


class SourceRejected(ProviderError):
    """The source as configured cannot work (unknown shop, pixel or container): it needs the merchant."""


class CredentialsRejected(SourceRejected):
    """The provider refused the source's credentials (invalid, revoked, expired or missing scope)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to wait. Tests pass small delays; production uses the defaults."""

    # Worst case per request: attempts x (connect + read timeout) + (attempts - 1) x max_wait = 135 s,
    # which a sync task must fit inside its time limit along with its time budget.
    attempts: int = 3  # per request, for transient failures
    base_delay: float = 1.0  # first backoff ceiling; doubles per attempt (full jitter)
    max_delay: float = 10.0
    max_wait: float = 30.0  # the longest single wait honoured (Retry-After, cost throttling)
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def timeout(self) -> tuple[float, float]:
        return self.connect_timeout, self.read_timeout

    def backoff(self, attempt: int) -> float:
        # Full jitter: many workers retrying one provider spread out instead of arriving together.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(min(seconds, self.max_wait))


DEFAULT_POLICY = RetryPolicy()

# A connector's hook for answers that look fine to HTTP but mean "slow down" (Graph API error code 4
# with HTTP 400, Shopify THROTTLED with HTTP 200): seconds to wait before retrying, or None.
TransientHint = Callable[[requests.Response], float | None]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: decimal seconds ("2.0", as Shopify sends) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def send(session: requests.Session, method: str, url: str, *, provider: str, policy: RetryPolicy,
         transient_hint: TransientHint | None = None, **kwargs: Any) -> requests.Response:
    """One request with bounded retries; answers anything that is neither transient nor 401/403."""
    problem = f"{provider} could not be reached"
    for attempt in range(policy.attempts):
        try:
            response = session.request(method, url, timeout=policy.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem, delay = f"{provider} could not be reached ({type(exc).__name__})", policy.backoff(attempt)
        else:
            retry_in = _retry_delay(response, attempt, policy, transient_hint)
            if retry_in is None:
                _raise_for_credentials(response, provider)
                return response
            problem, delay = f"{provider} answered HTTP {response.status_code}", retry_in
        log.warning("%s; attempt %d of %d, next in %.2fs", problem, attempt + 1, policy.attempts, delay)
        if attempt + 1 < policy.attempts:
            policy.wait(delay)
    raise TransientProviderError(f"{problem} (gave up after {policy.attempts} attempts)")


def _retry_delay(response: requests.Response, attempt: int, policy: RetryPolicy,
                 transient_hint: TransientHint | None) -> float | None:
    if response.status_code == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return policy.backoff(attempt) if retry_after is None else retry_after
    if response.status_code >= 500:
        return policy.backoff(attempt)
    return transient_hint(response) if transient_hint is not None else None


def _raise_for_credentials(response: requests.Response, provider: str) -> None:
    if response.status_code == 401:
        raise CredentialsRejected(f"{provider} rejected the access token (HTTP 401): it is invalid or was revoked.")
    if response.status_code == 403:
        raise CredentialsRejected(f"{provider} refused access (HTTP 403): the token lacks a required permission.")


def json_body(response: requests.Response) -> Any:
    """The parsed body, or None when it is not JSON (edges answer HTML error pages)."""
    try:
        return response.json()
    except ValueError:
        return None
