"""Event processing: pending data_events become contacts and contact activity.

A batch is claimed and stamped `processedAt` by one `UPDATE ... FOR UPDATE SKIP LOCKED` statement,
in the same transaction as everything it leads to, so concurrent workers never take the same event
and a crash un-claims the batch by rolling back. A batch whose events only name known contacts (the
events of known customers) finds them with one query and no lock; one that creates, merges or
changes contacts resolves them under a transaction-scoped advisory lock per merchant: two batches
can't both create the same new customer. The batch's
orders are credited to the messages that brought them (app.services.attribution) in the same
transaction, in one statement, and contacts enter and leave flows (app.services.flows). Only the
activity rows the batch's own transaction wrote, one per event, go on to those: an event processed
again changes nothing twice.

A batch commits without waiting for its WAL to reach the disk (`synchronous_commit` off for that
transaction: a worker does not sit idle on a disk flush per batch). What a crash of PostgreSQL can
lose is only the last fraction of a second of committed batches, claim and results together: those
events are pending again and processed anew. Nothing acts outside the database on what a batch
wrote before a synchronous commit of its own, which flushes the WAL up to there, the batch's commit
included: the send engine and the webhook outbox commit their claim before any request goes out.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import insert as pg_insert
from uuid_utils import uuid7

from app import task_names as tasks
from app.extensions import db
from app.jobs import hint
from app.models import ContactActivity, EventFailure
from app.services import attribution, bulk_sql, contact_timezones, flows
from app.services.consent import declare
from app.services.identity_resolution import BatchResolver, unchanged_owners
from app.services.prepared_statements import PreparedStatement
from app.sources.normalize import Identity, NormalizedEvent, PoisonEvent, normalize

log = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_ATTEMPTS = 3
PROCESS_TIME_BUDGET = 60.0  # seconds per task, well inside the soft time limit
# At most one processing hint per this many milliseconds, however many requests arrive.
HINT_DEBOUNCE_MS = 500
ERROR_MAX = 2000


def _claim_sql(only: str = "") -> str:
    # The rows locked are updated where they are (a TID scan of the ctids the lock returned), not
    # looked up again by id in the primary key's index: a claim costs about 10 % less. A row's ctid
    # cannot change while the claim holds its lock; a row that another transaction changed after
    # the statement began is not the version seen, is not updated, and waits for the next claim.
    return f"""
    UPDATE data_events AS e SET "processedAt" = now()
    FROM data_sources AS s
    WHERE e.ctid = ANY(ARRAY(
        SELECT ctid FROM data_events
        WHERE "processedAt" IS NULL {only}
        ORDER BY "createdAt"
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )) AND s.id = e."dataSourceId"
    RETURNING CAST(e.id AS text), e."eventType", e."eventData", e."createdAt", s."sourceType",
              CAST(s."userId" AS text)
    """


@lru_cache(maxsize=4)
def _claim_batch(limit: int) -> PreparedStatement:
    """The claim every batch runs, prepared. Its size is written into it: PostgreSQL planned a
    LIMIT parameter afresh for every batch (the generic plan, the same, costed higher for not
    knowing the limit), and a statement without parameters is planned once per connection."""
    return PreparedStatement(f"herald_claim_events_{limit}", sa.text(_claim_sql()).bindparams(limit=limit),
                             inline_constants=True)


_CLAIM_ONE = sa.text(_claim_sql("AND id = CAST(:id AS uuid)"))  # an event retried alone

# For the claiming transaction only (module doc).
_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit TO OFF")


@dataclass(slots=True)  # hundreds a batch: not frozen, whose __init__ costs more than twice as much
class ClaimedEvent:
    # Its id as text: a batch keys and passes on hundreds of them, never needing them parsed.
    id: str
    event_type: str
    event_data: Any
    created_at: datetime
    source_type: str
    user_id: uuid.UUID


def process_pending(time_budget: float = PROCESS_TIME_BUDGET, batch_size: int = BATCH_SIZE) -> int:
    """Process batches until the queue is empty or the time budget is spent; events processed.

    While full batches keep coming, another worker is invited (a debounced hint), so a backlog is
    drained by every free worker rather than one.
    """
    deadline = time.monotonic() + time_budget
    total = 0
    while True:
        claimed = process_batch(batch_size)
        total += claimed
        if claimed < batch_size:
            return total
        hint_processing()
        if time.monotonic() >= deadline:
            return total


def hint_processing() -> None:
    """Ask a worker to process soon (debounced; beat's sweep processes what arrived anyway)."""
    hint(tasks.PROCESS_PENDING, HINT_DEBOUNCE_MS)


def process_batch(batch_size: int = BATCH_SIZE) -> int:
    """Claim and process up to `batch_size` pending events; the number claimed (0: queue empty)."""
    claimed = _claim(batch_size)
    if not claimed:
        db.session.commit()
        return 0
    try:
        _process(claimed)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("event batch failed; processing its events one by one")
        for event in claimed:
            _process_alone(event.id)
    return len(claimed)


def _claim(limit: int, only: str | None = None) -> list[ClaimedEvent]:
    db.session.execute(_ASYNC_COMMIT)
    if only is None:
        rows = _claim_batch(limit).execute_in(db.session, db.engine, {}).all()
    else:
        rows = db.session.execute(_CLAIM_ONE, {"limit": limit, "id": only}).all()
    merchants = {user_id: uuid.UUID(user_id) for user_id in {row[5] for row in rows}}  # a batch has a few
    # In the order they arrived, as the claim took them (the update returns them in the order of
    # its plan): a later request's word on a contact is the last. (One request's events share
    # their `createdAt`.)
    rows.sort(key=itemgetter(3))
    return [ClaimedEvent(event_id, event_type, data, created_at, source_type, merchants[user_id])
            for event_id, event_type, data, created_at, source_type, user_id in rows]


def _process(events: list[ClaimedEvent]) -> None:
    normalized: dict[str, NormalizedEvent] = {}
    poisoned: dict[str, str] = {}
    for event in events:
        try:
            normalized[event.id] = normalize(event.source_type, event.event_type, event.event_data)
        except PoisonEvent as exc:
            poisoned[event.id] = str(exc)
    by_merchant: dict[uuid.UUID, list[ClaimedEvent]] = defaultdict(list)
    for event in events:
        if event.id in normalized:
            by_merchant[event.user_id].append(event)
    activities = []
    for user_id in sorted(by_merchant):  # a fixed lock order: no deadlock between two batches
        activities += _fold_into_contacts(user_id, by_merchant[user_id], normalized)
    located = bulk_sql.insert_located(db.session, ContactActivity.__table__, activities, ("userId", "eventType"),
                                      'ON CONFLICT ("dataEventId") DO NOTHING')
    if sum(count for count, _ in located.values()) < len(activities):
        activities = _written_now(activities)
    # Contacts enter the merchants' running flows, and leave them, with the events that say so:
    # first, while the rows just written are where the insert says (nothing here changes them).
    flows.enroll({key: tids for key, (_, tids) in located.items()})
    attribution.credit_orders(activities)
    # Where the events place their contacts: one statement for the batch's timezones.
    contact_timezones.store_derived(
        (row["contactId"], normalized[row["dataEventId"]].zone, row["occurredAt"]) for row in activities
    )
    if poisoned:
        _record_failures(poisoned, quarantine=True)


# The batch's activity rows written before this transaction (`createdAt` is its start, in UTC).
_WRITTEN_BEFORE = sa.text(
    'SELECT CAST("dataEventId" AS text) FROM contact_activities '
    'WHERE "dataEventId" = ANY(CAST(:ids AS uuid[])) AND "createdAt" < LOCALTIMESTAMP'
)


def _written_now(activities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The activities this transaction wrote. An event processed before (its `processedAt` cleared
    by hand, say) has its activity row from then, unique per event, and what it led to (orders
    credited, flows entered) is done: it is not done twice."""
    ids = bulk_sql.array_literal(row["dataEventId"] for row in activities)
    before = set(db.session.scalars(_WRITTEN_BEFORE, {"ids": ids}))
    return [row for row in activities if row["dataEventId"] not in before]


def _fold_into_contacts(user_id: uuid.UUID, events: list[ClaimedEvent],
                        normalized: dict[str, NormalizedEvent]) -> list[dict[str, Any]]:
    """The batch's activity rows of one merchant, each with the contact its event belongs to. Their
    ids are time-ordered (UUIDv7): the primary key's index grows at its end, where a random id
    (the column's default) would take a page anywhere in it for every row, and as the table
    outgrows memory each such page is a read; made here they also cost less than the default."""
    identities = [(normalized[e.id].identity, normalized[e.id].consent) for e in events]
    owners = unchanged_owners(db.session(), user_id, identities)
    if owners is None:
        owners = _resolve_under_lock(user_id, identities)
    return [
        {
            "id": str(uuid7()),
            "userId": user_id,
            "contactId": owner,
            "dataEventId": e.id,
            "eventType": normalized[e.id].type,
            "originalName": normalized[e.id].original_name,
            "occurredAt": normalized[e.id].occurred_at or e.created_at,
            "properties": normalized[e.id].properties,
        }
        for e, owner in zip(events, owners, strict=True)
        if owner is not None  # anonymous events are processed, but belong to no one
    ]


def _resolve_under_lock(user_id: uuid.UUID,
                        identities: list[tuple[Identity, dict[str, str]]]) -> list[str | None]:
    """Decide and store the merchant's contacts in a short transaction of its own, under the
    merchant's lock (two batches can't both create the same new customer); the batch's activity
    rows are written afterwards in the claiming transaction, so concurrent workers serialize only
    on this part. If the claiming transaction then fails, the contacts it created stay and are
    simply found again when its events are retried."""
    with orm.Session(bind=db.engine, join_transaction_mode="create_savepoint") as session, session.begin():
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"herald.contacts:{user_id}"})
        declare("event", session=session)
        resolver = BatchResolver(session, user_id, identities)
        owners = [resolver.resolve(identity, consent) for identity, consent in identities]
        resolver.write()
        return [None if owner is None else str(resolver.final(owner)) for owner in owners]


def _process_alone(event_id: str) -> None:
    """Retry one event of a failed batch in its own transaction; count failures, quarantine at last."""
    claimed = _claim(1, only=event_id)
    if not claimed:
        db.session.commit()
        return
    try:
        _process(claimed)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        log.exception("event failed", extra={"data_event_id": event_id})
        _record_failures({event_id: f"{type(exc).__name__}: {exc}"}, quarantine=False)
        db.session.commit()


def _record_failures(errors: dict[str, str], quarantine: bool) -> None:
    """Count an attempt per event; at MAX_ATTEMPTS (or a poison payload) the event is quarantined,
    stamped processed so it no longer holds up the queue, with its error visible through the API."""
    rows = [{"dataEventId": event_id, "attempts": 1, "lastError": error[:ERROR_MAX],
             "quarantinedAt": sa.func.now() if quarantine else None} for event_id, error in errors.items()]
    table = EventFailure.__table__
    stmt = pg_insert(table).values(rows)
    attempts = table.c.attempts + 1
    stmt = stmt.on_conflict_do_update(
        index_elements=["dataEventId"],
        set_={
            "attempts": attempts,
            "lastError": stmt.excluded.lastError,
            "updatedAt": sa.func.now(),
            "quarantinedAt": sa.case(
                (sa.or_(stmt.excluded.quarantinedAt.is_not(None), attempts >= MAX_ATTEMPTS), sa.func.now()),
                else_=None,
            ),
        },
    )
    quarantined = db.session.execute(stmt.returning(table.c.dataEventId, table.c.quarantinedAt)).all()
    done = [row.dataEventId for row in quarantined if row.quarantinedAt is not None]
    if not quarantine and done:
        db.session.execute(sa.text('UPDATE data_events SET "processedAt" = now() WHERE id = ANY(CAST(:ids AS uuid[]))'),
                           {"ids": [str(i) for i in done]})
