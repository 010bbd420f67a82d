"""Source syncs: runs requested by a merchant or by beat, executed by workers, settled by a reaper.

A run is a `data_source_sync_runs` row; at most one per source is `running` (a partial unique index,
so concurrent clicks and beats agree without locks). A worker claims a run by stamping a fresh claim
token into its details and extending its lease; every later write is a guarded UPDATE on
(run, `running`, claim), so a run reaped or re-claimed elsewhere stops its old worker at the next page.
Shopify pages are stored one transaction each, with the run's progress (cursor, counts), so a run
retried after a transient failure, or continued after its time budget, resumes where it stopped.

Only sources with API credentials sync: a pixel or GTM source without them just receives events.
A source whose credentials or configuration the provider refuses goes to `error` and is left out of
the schedule (it keeps receiving events) until its merchant changes its config.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql as pg

from app import clock
from app import task_names as tasks
from app.errors import Conflict, NotFound
from app.extensions import db, rowcount
from app.jobs import enqueue_after_commit
from app.models import DataSource, SyncRun, utcnow
from app.services.event_processing import hint_processing
from app.services.ingestion import IncomingEvent, insert_new_events
from app.sources import facebook_pixel, gtm, http, shopify
from app.sources.configs import API_TOKEN, calls_api, decrypt_config
from app.sources.http import (
    ProviderError,
    RetryPolicy,
    SourceRejected,
    TransientProviderError,
)

log = logging.getLogger(__name__)

# A run starts at app.clock's time (a source's next check is due by it, and tests move it); its lease
# keeps the real clock: it measures how long the work takes.
LEASE = timedelta(minutes=10)  # renewed every page; far longer than one page with all its retries
# Seconds of pulling per task, then the run continues in a fresh task. With the default retry policy's
# worst page (attempts x timeouts + waits) it stays inside the 240 s soft time limit.
TIME_BUDGET = 45.0
WORKER_LOST = "worker lost"
NO_CREDENTIALS = "This source has no API credentials: it only receives events."
# A pixel or GTM sync only checks the connection: once an hour is news enough. Shopify pulls on
# every beat.
CHECK_INTERVAL = timedelta(hours=1)
CHECK_ONLY_TYPES = ("facebook_pixel", "gtm")

_TABLE = SyncRun.__table__


class _ConflictTarget(TypedDict):
    index_elements: list[str]
    index_where: sa.TextClause


_ONE_RUNNING: _ConflictTarget = {"index_elements": ["dataSourceId"], "index_where": sa.text("status = 'running'")}
# Keys and events of a page in one statement: a key already stored (an earlier page, an earlier
# sync, the overlap window) drops its event; rowcount is the number of events really created.
@dataclass
class Claim:
    """A run this worker holds, with what it needs to execute it."""

    run_id: uuid.UUID
    token: str
    source_id: uuid.UUID
    source_type: str
    config: dict[str, Any] = field(repr=False)  # decrypted: never let it reach a log line
    last_sync_at: datetime | None
    started_at: datetime
    details: dict[str, Any]


# -- starting runs ------------------------------------------------------------------------------
def request_sync(user_id: uuid.UUID, source_id: uuid.UUID) -> SyncRun:
    """Start a manual sync, or answer the one already running (two clicks start one sync)."""
    source = db.session.scalar(sa.select(DataSource).where(DataSource.id == source_id, DataSource.user_id == user_id))
    if source is None:
        raise NotFound("Data source not found.")
    if source.status == "inactive":
        raise Conflict("The data source is inactive; activate it before syncing.")
    if not calls_api(source.config):
        raise Conflict(NO_CREDENTIALS + " Add an accessToken to its config to check and pull.")
    run_id = start_run(source.id, "manual")
    db.session.commit()
    return db.session.get_one(SyncRun, run_id)


def start_run(source_id: uuid.UUID, trigger: str) -> uuid.UUID:
    """The source's running run: a new one (its task queued after the caller commits), or the one
    already running. No commit."""
    for _ in range(3):  # the running run may finish between our insert and our read: look again
        inserted = db.session.scalar(
            pg.insert(_TABLE)
            .values(dataSourceId=source_id, trigger=trigger, status="running", startedAt=clock.now(),
                    leaseExpiresAt=utcnow() + LEASE)
            .on_conflict_do_nothing(**_ONE_RUNNING)
            .returning(_TABLE.c.id)
        )
        if inserted is not None:
            enqueue_after_commit(tasks.SYNC, str(inserted))
            return inserted
        running = db.session.scalar(
            sa.select(SyncRun.id).where(SyncRun.data_source_id == source_id, SyncRun.status == "running"))
        if running is not None:
            return running
    raise Conflict("The data source is busy; try again.")


def schedule_all() -> int:
    """Beat: one run for every due active source with credentials and without a run (a concurrent
    beat's runs simply win). Sources in `error` wait for their merchant: retrying refused
    credentials every few minutes only gets an account flagged."""
    now = clock.now()
    checked_long_ago = sa.or_(DataSource.last_sync_at.is_(None), DataSource.last_sync_at < now - CHECK_INTERVAL)
    due = sa.or_(DataSource.source_type.not_in(CHECK_ONLY_TYPES), checked_long_ago)
    select_active = sa.select(DataSource.id, sa.literal("schedule"), sa.literal("running"), sa.literal(now),
                              sa.literal(utcnow() + LEASE)).where(
        DataSource.status == "active", DataSource.config.op("?")(API_TOKEN), due)
    run_ids = db.session.scalars(
        pg.insert(_TABLE)
        .from_select(["dataSourceId", "trigger", "status", "startedAt", "leaseExpiresAt"], select_active)
        .on_conflict_do_nothing(**_ONE_RUNNING)
        .returning(_TABLE.c.id)
    ).all()
    for run_id in run_ids:
        enqueue_after_commit(tasks.SYNC, str(run_id))
    db.session.commit()
    return len(run_ids)


def reap_stale_syncs() -> int:
    """Fail runs whose lease passed: their worker died, and the source can sync again."""
    reaped = rowcount(db.session.execute(
        sa.update(_TABLE)
        .where(_TABLE.c.status == "running", _TABLE.c.leaseExpiresAt < utcnow())
        .values(status="failed", error=WORKER_LOST, finishedAt=utcnow())
    ))
    db.session.commit()
    if reaped:
        log.warning("reaped %d sync run(s) whose worker was lost", reaped)
    return reaped


# -- executing a run ----------------------------------------------------------------------------
def run_sync(run_id: uuid.UUID, *, policy: RetryPolicy | None = None) -> None:
    """Execute (or continue) a run. A run no longer `running` is left alone.

    Credentials or configuration the provider refuses put the source in `error` and fail the run;
    other permanent failures fail the run; transient ones are noted and re-raised for a retry.
    """
    claim = _claim(run_id)
    if claim is None:
        return
    if not calls_api(claim.config):
        _fail(claim.run_id, NO_CREDENTIALS, claim=claim.token)
        return
    try:
        _SYNCS[claim.source_type](claim, policy or http.DEFAULT_POLICY)
    except TransientProviderError as exc:
        _note_transient(claim, str(exc))
        raise
    except SourceRejected as exc:
        _fail(claim.run_id, str(exc), claim=claim.token, source_error=True)
    except ProviderError as exc:
        _fail(claim.run_id, str(exc), claim=claim.token)
    except Exception as exc:
        _fail(claim.run_id, f"unexpected error ({type(exc).__name__})", claim=claim.token)
        raise


def fail_run(run_id: uuid.UUID, reason: str) -> None:
    """Give up on a run (its retries are exhausted); a no-op when it is no longer running."""
    _fail(run_id, reason)


def _claim(run_id: uuid.UUID) -> Claim | None:
    token = uuid.uuid4().hex
    row = db.session.execute(
        sa.update(_TABLE)
        .where(_TABLE.c.id == run_id, _TABLE.c.status == "running")
        .values(leaseExpiresAt=utcnow() + LEASE,
                details=_TABLE.c.details.op("||")(sa.literal({"claim": token}, pg.JSONB)))
        .returning(_TABLE.c.dataSourceId, _TABLE.c.startedAt, _TABLE.c.details)
    ).first()
    source = db.session.get(DataSource, row.dataSourceId) if row is not None else None
    if row is None or source is None:
        db.session.rollback()
        return None
    claim = Claim(run_id, token, source.id, source.source_type, {}, source.last_sync_at, row.startedAt,
                  dict(row.details))
    status = source.status
    try:
        claim.config = decrypt_config(source.source_type, source.config)
    except ValueError:
        db.session.commit()
        _fail(run_id, "The stored credentials cannot be decrypted; enter them again.", claim=token, source_error=True)
        return None
    db.session.commit()
    if status == "inactive":
        _fail(run_id, "The data source was deactivated.", claim=token)
        return None
    return claim


def _sync_shopify(claim: Claim, policy: RetryPolicy) -> None:
    since = shopify.window_start(claim.config, claim.last_sync_at, claim.started_at)
    claim.details["since"] = since.isoformat()
    deadline = time.monotonic() + TIME_BUDGET
    client = shopify.ShopifyClient(claim.config, base_url=_base_url("SHOPIFY_API_BASE_URL"), policy=policy)
    try:
        for resource in shopify.RESOURCES:
            if not _pull(claim, client, resource, since, deadline):
                return
    finally:
        client.close()
    _succeed(claim)


def _pull(claim: Claim, client: shopify.ShopifyClient, resource: shopify.Resource, since: datetime,
          deadline: float) -> bool:
    """Store every page of one resource; False when the run continues elsewhere or was lost."""
    progress = claim.details.setdefault(resource.name, {"fetched": 0, "created": 0, "cursor": None, "done": False})
    while not progress["done"]:
        page = client.fetch_page(resource, since, progress["cursor"])
        if not _store_page(claim, resource, page, since, progress):
            return False
        # Checked after a page, never before: every execution makes progress, however late it starts.
        if not progress["done"] and time.monotonic() > deadline:
            _continue_later(claim)
            return False
    return True


def _store_page(claim: Claim, resource: shopify.Resource, page: shopify.Page, since: datetime,
                progress: dict[str, Any]) -> bool:
    events = [IncomingEvent(resource.dedupe_key(n), resource.event_type, n)
              for n in page.nodes if resource.keeps(n, since)]
    created = insert_new_events(claim.source_id, events)
    progress.update(fetched=progress["fetched"] + len(page.nodes), created=progress["created"] + created,
                    cursor=page.end_cursor or progress["cursor"], done=not page.has_next)
    if not _save_progress(claim, events_created=created):
        return False
    if created:
        hint_processing()
    db.session.commit()
    return True


def _save_progress(claim: Claim, events_created: int = 0) -> bool:
    """Record progress and renew the lease, if the run is still ours; else undo this transaction."""
    saved = rowcount(db.session.execute(
        _guarded(claim.run_id, claim.token)
        .values(details=dict(claim.details), leaseExpiresAt=utcnow() + LEASE,
                eventsCreated=_TABLE.c.eventsCreated + events_created)
    ))
    if not saved:
        db.session.rollback()
        log.warning("sync run %s was reaped or claimed elsewhere; this worker stops", claim.run_id)
    return bool(saved)


def _continue_later(claim: Claim) -> None:
    # The time budget is spent: hand the rest to a fresh task so no task nears its time limit.
    if _save_progress(claim):
        enqueue_after_commit(tasks.SYNC, str(claim.run_id))
        db.session.commit()


def _verify(check: Callable[..., dict[str, Any]], base_url_name: str) -> Callable[[Claim, RetryPolicy], None]:
    """Pixel and GTM syncs: the connector's check succeeds or raises; what it read goes to details."""
    def sync(claim: Claim, policy: RetryPolicy) -> None:
        claim.details.update(check(claim.config, base_url=_base_url(base_url_name), policy=policy))
        _succeed(claim)
    return sync


_SYNCS: dict[str, Callable[[Claim, RetryPolicy], None]] = {
    "shopify": _sync_shopify,
    "facebook_pixel": _verify(facebook_pixel.verify_pixel, "META_GRAPH_API_BASE_URL"),
    "gtm": _verify(gtm.verify_container, "GTM_API_BASE_URL"),
}


# -- settling a run -----------------------------------------------------------------------------
def _succeed(claim: Claim) -> None:
    """Run, high-water mark and source status move together, or not at all."""
    details = {k: _summary(v) for k, v in claim.details.items() if k not in ("claim", "lastError")}
    done = rowcount(db.session.execute(
        _guarded(claim.run_id, claim.token)
        .values(status="succeeded", finishedAt=utcnow(), error=None, details=details)
    ))
    if not done:
        db.session.rollback()
        return
    db.session.execute(
        sa.update(DataSource).where(DataSource.id == claim.source_id).values(
            # The sync's start is the mark: anything changed while it ran is read again next time.
            last_sync_at=sa.func.greatest(DataSource.last_sync_at, claim.started_at),
            status=sa.case((DataSource.status == "error", "active"), else_=DataSource.status),
        )
    )
    db.session.commit()
    log.info("sync run %s succeeded", claim.run_id)


def _summary(value: Any) -> Any:
    """Per-resource progress without the resume bookkeeping."""
    if isinstance(value, dict) and "cursor" in value:
        return {k: v for k, v in value.items() if k not in ("cursor", "done")}
    return value


def _fail(run_id: uuid.UUID, reason: str, *, claim: str | None = None, source_error: bool = False) -> None:
    db.session.rollback()  # whatever the failure left half-done in this transaction
    source_id = db.session.scalar(
        _guarded(run_id, claim).values(status="failed", finishedAt=utcnow(), error=reason,
                                       details=_TABLE.c.details.op("-")(sa.literal("claim")))
        .returning(_TABLE.c.dataSourceId)
    )
    if source_id is not None and source_error:
        db.session.execute(
            sa.update(DataSource).where(DataSource.id == source_id, DataSource.status != "inactive")
            .values(status="error")
        )
    db.session.commit()
    if source_id is not None:
        log.warning("sync run %s failed: %s", run_id, reason)


def _note_transient(claim: Claim, reason: str) -> None:
    db.session.rollback()
    claim.details["lastError"] = reason
    if _save_progress(claim):
        db.session.commit()


def _guarded(run_id: uuid.UUID, claim: str | None) -> sa.Update:
    statement = sa.update(_TABLE).where(_TABLE.c.id == run_id, _TABLE.c.status == "running")
    if claim is not None:
        statement = statement.where(_TABLE.c.details["claim"].astext == claim)
    return statement


def _base_url(name: str) -> str:
    return current_app.config["HERALD_SETTINGS"].api_base_urls.get(name, "")
