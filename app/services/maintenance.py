"""Housekeeping: revoked tokens and sessions that can no longer matter, de-duplication records
(provider event ids, API idempotency keys) past any retry, and retention — raw events, sync runs
and unparsed bounce mail kept only as long as their settings say (the contacts' activity that audiences read, and campaign
totals, stay)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.extensions import db, rowcount
from app.models import (
    BounceMail,
    DataEvent,
    EventDedupeKey,
    HeldReceipt,
    IdempotencyKey,
    SyncRun,
    TokenBlacklist,
    UserSession,
    utcnow,
)
from app.services import idempotency

SESSION_RETENTION = timedelta(days=30)
# Providers redeliver for up to two days (Shopify's webhook retries, Meta's dedup window); a week of
# de-duplication keys covers them with room to spare.
DEDUPE_KEY_RETENTION = timedelta(days=7)
# A receipt whose message id never appears belongs to no message Herald sent (or one deleted since).
HELD_RECEIPT_RETENTION = timedelta(days=1)
PURGE_BATCH_SIZE = 1000


@dataclass(frozen=True)
class PurgeResult:
    blacklisted_tokens: int
    sessions: int


def purge_expired_tokens(now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> PurgeResult:
    """Delete blacklist rows past their token's expiry and sessions expired over 30 days ago.

    A blacklisted jti only matters until the token it names would have expired anyway. Work is done
    in bounded batches, each its own transaction, so a large backlog never holds long locks.
    """
    now = now or utcnow()
    tokens = delete_in_batches(TokenBlacklist, TokenBlacklist.expires_at < now, batch_size)
    sessions = delete_in_batches(UserSession, UserSession.expires_at < now - SESSION_RETENTION, batch_size)
    return PurgeResult(blacklisted_tokens=tokens, sessions=sessions)


def purge_dedupe_keys(now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Forget provider event ids older than any redelivery (the events themselves stay)."""
    cutoff = (now or utcnow()) - DEDUPE_KEY_RETENTION
    return delete_in_batches(EventDedupeKey, EventDedupeKey.created_at < cutoff, batch_size)


def purge_idempotency_keys(now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Forget API answers kept for retries once their 24 hours are over (a claim already ignores them)."""
    return delete_in_batches(IdempotencyKey, idempotency.expired(now or utcnow()), batch_size)


def purge_held_receipts(now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> int:
    cutoff = (now or utcnow()) - HELD_RECEIPT_RETENTION
    return delete_in_batches(HeldReceipt, HeldReceipt.created_at < cutoff, batch_size)


@dataclass(frozen=True)
class RetentionResult:
    events: int
    sync_runs: int
    bounce_mail: int


def apply_retention(now: datetime | None = None, batch_size: int = PURGE_BATCH_SIZE) -> RetentionResult:
    """Delete processed raw events older than EVENT_RETENTION_DAYS (their activity rows are not tied
    to them and stay; events still waiting to be processed are never deleted) and finished sync runs
    older than SYNC_RUN_RETENTION_DAYS, and unparsed bounce mail older than
    BOUNCE_MAIL_RETENTION_DAYS (it quotes the messages it returns), in bounded batches."""
    now = now or utcnow()
    settings = current_app.config["HERALD_SETTINGS"]
    events = delete_in_batches(
        DataEvent, DataEvent.processed_at < now - timedelta(days=settings.event_retention_days), batch_size)
    runs = delete_in_batches(
        SyncRun, SyncRun.finished_at < now - timedelta(days=settings.sync_run_retention_days), batch_size)
    mail = delete_in_batches(
        BounceMail, BounceMail.received_at < now - timedelta(days=settings.bounce_mail_retention_days), batch_size)
    return RetentionResult(events=events, sync_runs=runs, bounce_mail=mail)


def delete_in_batches(model: type, condition: sa.ColumnElement[bool], batch_size: int) -> int:
    total = 0
    row: sa.ColumnClause[Any] = sa.literal_column("ctid")  # the physical row id: works for any primary key shape
    while True:
        # SKIP LOCKED: a concurrent purge (two beats) takes other rows instead of waiting.
        batch = sa.select(row).select_from(model).where(condition).limit(batch_size).with_for_update(skip_locked=True)
        deleted = rowcount(db.session.execute(sa.delete(model).where(row.in_(batch.scalar_subquery()))))
        db.session.commit()
        total += deleted
        if deleted < batch_size:
            return total
