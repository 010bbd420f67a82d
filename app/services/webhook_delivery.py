"""Delivering the outbox: due deliveries are claimed from the database (FOR UPDATE SKIP LOCKED, under
a lease), posted signed to their endpoints, and each answer recorded on its row.

A deliberate multi-transaction loop: a claim is committed before its requests go out, and each
answer is recorded in a transaction of its own as it comes back. A worker killed mid-request leaves
its rows claimed until the lease lapses; the next run claims them again and the event goes out
again with the same id (at least once: receivers de-duplicate by `Herald-Event-Id`). Several runs,
on any workers, share the work through the claim.

A failed attempt (no 2xx within WEBHOOK_TIMEOUT_SECONDS) is tried again after WEBHOOK_RETRY_SECONDS,
then twice as long each time (at most MAX_RETRY_INTERVAL), until WEBHOOK_RETRY_HOURS after the
first attempt; then the delivery fails. An endpoint whose every attempt failed for that long is
disabled, its pending deliveries failed with it, until the merchant enables it again. Times of
retries are the clock's (app.clock), so tests move the clock instead of waiting.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis
import sqlalchemy as sa
from flask import current_app

from app import clock
from app import task_names as tasks
from app.config import Settings
from app.extensions import db, redis_client, rowcount
from app.jobs import enqueue_after_commit
from app.security.secret_box import decrypt
from app.services.transactions import transaction
from app.webhooks import signatures
from app.webhooks.transport import Answer, WebhookClient

log = logging.getLogger(__name__)

BATCH = 16  # deliveries claimed, and posted at once, per round
TIME_BUDGET = 60.0  # seconds a run works before a fresh task carries on
MAX_RETRY_INTERVAL = timedelta(hours=6)
WAKE_KEY = "herald:webhooks:wake"
ERROR_MAX = 2000
DISABLED_BY_MERCHANT = "Disabled by the merchant."
ENDPOINT_DISABLED = "The endpoint was disabled before this event was delivered; replay it once it is enabled again."


def _settings() -> Settings:
    return current_app.config["HERALD_SETTINGS"]


def lease_seconds(settings: Settings) -> int:
    """How long a claim holds its rows: past the longest a round of requests can take."""
    return 2 * settings.webhook_timeout_seconds + 5


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    attempts: int  # this attempt's number: the guard its outcome is recorded under
    endpoint_id: uuid.UUID
    url: str
    secret: str
    event_id: uuid.UUID
    event_type: str
    body: bytes
    first_attempt_at: datetime


_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT d.id FROM webhook_deliveries AS d
        JOIN webhook_endpoints AS e ON e.id = d."endpointId"
        WHERE d.status = 'pending' AND d."nextAttemptAt" <= CAST(:now AS timestamp) AND e.enabled
          AND (d."leaseExpiresAt" IS NULL OR d."leaseExpiresAt" < now())
        ORDER BY d."nextAttemptAt"
        LIMIT :limit
        FOR UPDATE OF d SKIP LOCKED
    ),
    claimed AS (
        UPDATE webhook_deliveries AS d SET
            attempts = d.attempts + 1,
            "leaseExpiresAt" = now() + make_interval(secs => :lease),
            "firstAttemptAt" = coalesce(d."firstAttemptAt", CAST(:now AS timestamp)),
            "lastAttemptAt" = CAST(:now AS timestamp)
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.attempts, d."eventId", d."endpointId", d."firstAttemptAt"
    )
    SELECT claimed.id, claimed.attempts, claimed."endpointId", claimed."firstAttemptAt", e.url, e.secret,
           ev.id AS event_id, ev.type, ev.data, ev."createdAt"
    FROM claimed
    JOIN webhook_events AS ev ON ev.id = claimed."eventId"
    JOIN webhook_endpoints AS e ON e.id = claimed."endpointId"
    """
)


def deliver_due(time_budget: float = TIME_BUDGET) -> int:
    """Worker: deliver what is due until nothing is or the time budget is spent, then make sure a
    run comes back for what is due next. Returns the deliveries that succeeded."""
    settings = _settings()
    client = WebhookClient(settings.webhook_allowed_private_networks, settings.webhook_timeout_seconds)
    deadline = time.monotonic() + time_budget
    succeeded, out_of_time = 0, False
    try:
        with ThreadPoolExecutor(BATCH, thread_name_prefix="webhook") as pool:
            while True:
                if time.monotonic() >= deadline:
                    out_of_time = True
                    break
                claimed = _claim(settings)
                if not claimed:
                    break
                futures = {pool.submit(client.post, row.url, row.body, _headers(row)): row for row in claimed}
                for future in as_completed(futures):
                    succeeded += _record(futures[future], future.result(), settings)
    finally:
        client.close()
    _come_back(settings, out_of_time)
    return succeeded


def _claim(settings: Settings) -> list[Claimed]:
    with transaction():
        rows = db.session.execute(_CLAIM, {"now": clock.now(), "limit": BATCH, "lease": lease_seconds(settings)}).all()
    secrets: dict[uuid.UUID, str] = {}
    claimed = []
    for row in rows:
        if row.endpointId not in secrets:
            secrets[row.endpointId] = decrypt(row.secret)
        claimed.append(Claimed(
            id=row.id, attempts=row.attempts, endpoint_id=row.endpointId, url=row.url, secret=secrets[row.endpointId],
            event_id=row.event_id, event_type=row.type, body=event_body(row.event_id, row.type, row.createdAt, row.data),
            first_attempt_at=row.firstAttemptAt))
    return claimed


def event_body(event_id: uuid.UUID, event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """What is posted: the same bytes on every attempt and replay of the event."""
    return orjson.dumps({"id": str(event_id), "type": event_type,
                         "createdAt": created_at.isoformat(timespec="microseconds") + "+00:00", "data": data})


def _headers(row: Claimed) -> dict[str, str]:
    return signatures.headers(row.secret, row.body, str(row.event_id), row.event_type, str(row.id))


_SUCCEEDED = sa.text(
    """
    UPDATE webhook_deliveries SET status = 'succeeded', "deliveredAt" = now(), "leaseExpiresAt" = NULL,
        "responseStatus" = :status, "responseBody" = :body, error = NULL, "durationMs" = :duration
    WHERE id = :id AND attempts = :attempts AND status <> 'succeeded'
    """
)
_FAILED_ATTEMPT = sa.text(
    """
    UPDATE webhook_deliveries SET status = :outcome, "nextAttemptAt" = :next, "leaseExpiresAt" = NULL,
        "responseStatus" = :status, "responseBody" = :body, error = :error, "durationMs" = :duration
    WHERE id = :id AND attempts = :attempts AND status = 'pending'
    """
)


def _record(row: Claimed, answer: Answer, settings: Settings) -> int:
    """Record the answer on the delivery (only if no later claim took it meanwhile) and on the
    endpoint's health, in one transaction. 1 when it succeeded."""
    now = clock.now()
    params = {"id": row.id, "attempts": row.attempts, "status": answer.status, "body": answer.body,
              "duration": answer.duration_ms}
    with transaction():
        if answer.ok:
            if not rowcount(db.session.execute(_SUCCEEDED, params)):
                return 0
            # Written only when it changes: a healthy endpoint's row is not rewritten per event.
            db.session.execute(sa.text(
                'UPDATE webhook_endpoints SET "consecutiveFailures" = 0, "failingSince" = NULL '
                'WHERE id = :id AND ("consecutiveFailures" > 0 OR "failingSince" IS NOT NULL)'),
                {"id": row.endpoint_id})
            return 1
        window = timedelta(hours=settings.webhook_retry_hours)
        give_up_at = row.first_attempt_at + window
        error = (answer.error or "Failed.")[:ERROR_MAX]
        outcome = "failed" if now >= give_up_at else "pending"
        if outcome == "failed":
            error = f"{error} Not retried: every attempt for {settings.webhook_retry_hours} hours failed."
        next_at = min(now + retry_delay(row.attempts, settings), give_up_at)
        if rowcount(db.session.execute(_FAILED_ATTEMPT, {**params, "outcome": outcome, "next": next_at,
                                                         "error": error})):
            _endpoint_failed(row.endpoint_id, now, window, error)
    return 0


def retry_delay(attempts: int, settings: Settings) -> timedelta:
    """The wait after the `attempts`-th failed attempt: doubling, with a little jitter so deliveries
    that failed together do not all come back at once, and never more than MAX_RETRY_INTERVAL."""
    base = settings.webhook_retry_seconds * 2 ** min(attempts - 1, 30) * (1 + random.random() / 10)
    return min(timedelta(seconds=base), MAX_RETRY_INTERVAL)


_ENDPOINT_FAILED = sa.text(
    """
    UPDATE webhook_endpoints SET "consecutiveFailures" = "consecutiveFailures" + 1,
        "failingSince" = coalesce("failingSince", CAST(:now AS timestamp))
    WHERE id = :id AND enabled
    RETURNING "failingSince", "consecutiveFailures"
    """
)


def _endpoint_failed(endpoint_id: uuid.UUID, now: datetime, window: timedelta, error: str) -> None:
    """Count the failure; an endpoint failing without a break for the whole window is disabled."""
    health = db.session.execute(_ENDPOINT_FAILED, {"id": endpoint_id, "now": now}).first()
    if health is None or health.failingSince > now - window:
        return
    hours = int(window.total_seconds() // 3600)
    disable(endpoint_id, f"Every delivery failed for {hours} hours ({health.consecutiveFailures} attempts in a row); "
                         f"the last: {error}"[:ERROR_MAX], now)
    log.warning("webhook endpoint disabled after failing for %s hours", hours, extra={"endpoint_id": str(endpoint_id)})


def disable(endpoint_id: uuid.UUID, reason: str, now: datetime) -> bool:
    """Disable the endpoint (a guarded UPDATE: once) and fail its pending deliveries; no new event
    is written for it until it is enabled again. The caller commits. False: it already was."""
    disabled = db.session.execute(sa.text(
        'UPDATE webhook_endpoints SET enabled = false, "disabledAt" = :now, "disabledReason" = :reason '
        "WHERE id = :id AND enabled RETURNING id"), {"id": endpoint_id, "now": now, "reason": reason}).first()
    if disabled is None:
        return False
    db.session.execute(sa.text(
        "UPDATE webhook_deliveries SET status = 'failed', error = :error, \"leaseExpiresAt\" = NULL "
        "WHERE \"endpointId\" = :id AND status = 'pending'"), {"id": endpoint_id, "error": ENDPOINT_DISABLED})
    return True


_NEXT_DUE = sa.text(
    """
    SELECT min(greatest(extract(epoch FROM d."nextAttemptAt" - CAST(:now AS timestamp)),
                        coalesce(extract(epoch FROM d."leaseExpiresAt" - CAST(now() AS timestamp)), 0)))
    FROM (SELECT w."nextAttemptAt", w."leaseExpiresAt" FROM webhook_deliveries AS w
          JOIN webhook_endpoints AS e ON e.id = w."endpointId" AND e.enabled  -- a disabled one's wait for it
          WHERE w.status = 'pending' ORDER BY w."nextAttemptAt" LIMIT 100) AS d
    """
)


def _come_back(settings: Settings, out_of_time: bool) -> None:
    """A fresh run at once when this one ran out of time with work left; otherwise one waiting task
    for the next due delivery (or a lapsing lease), at most WEBHOOK_WAKE_SECONDS away, so a retry
    goes out on time without beat sweeping often. Beyond that, the next wake or sweep finds it."""
    if out_of_time:
        enqueue_after_commit(tasks.DELIVER_WEBHOOKS)
        return
    with transaction():
        due_in = db.session.scalar(_NEXT_DUE, {"now": clock.now()})
    if due_in is None:
        return
    # At least a second: rows due now but not claimable were being claimed by another run.
    countdown = min(max(float(due_in), 1.0), float(settings.webhook_wake_seconds))
    try:
        first = redis_client().set(WAKE_KEY, b"1", nx=True, px=int(countdown * 1000))
    except redis.RedisError as exc:
        log.warning("webhook wake-up not scheduled, Redis is unreachable: %s", exc)
        return
    if first:
        enqueue_after_commit(tasks.DELIVER_WEBHOOKS, countdown=countdown)


def purge_old(days: int = 30, batch: int = 5000) -> int:
    """Daily: events older than `days` with nothing left to deliver go, with their deliveries (the
    log keeps a month). Returns the events deleted."""
    deleted = 0
    while True:
        with transaction():
            count = rowcount(db.session.execute(sa.text(
                """
                DELETE FROM webhook_events WHERE id IN (
                    SELECT ev.id FROM webhook_events AS ev
                    WHERE ev."createdAt" < now() - make_interval(days => :days)
                      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d
                                      WHERE d."eventId" = ev.id AND d.status = 'pending')
                    LIMIT :batch)
                """), {"days": days, "batch": batch}))
        deleted += count
        if count < batch:
            return deleted
