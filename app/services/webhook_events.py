"""The webhook outbox: each event is written in the transaction of the change it describes, so it
exists exactly when the change does; a worker delivers it afterwards (app.services.webhook_delivery).

An event is written only for a merchant with an enabled endpoint subscribed to its type, with one
pending delivery per such endpoint. Every writer goes through the same two SQL steps (OUTBOX), fed
by rows of ("userId", type, data): set-based, and part of the writer's own statement where it has
one, so a merchant without endpoints costs a probe of an index and writes nothing.

- `emit(user_id, type, data)`: the one call for an event made in Python, in the caller's transaction.
- `message_event_ctes("moved", *types)`: CTEs for a statement that moves ledger rows (the send
  engine's settle, a provider's receipt): its rows become `message.*` events in that same statement.
- `message_events(type, delivery_ids)`, `campaign_completed(campaign_id)`, `flow_enrolled(ids)`: the
  same for ledger rows, a campaign or flow enrolments changed by earlier statements of the transaction.

Each returns how many deliveries it queued, and hands that to `written`, which has a delivery run
start a second after the commit.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from app import task_names as tasks
from app.extensions import db
from app.jobs import hint
from app.webhooks.catalogue import check

HINT_SECONDS = 1  # a run starts this long after the first event of a burst: one run for the burst


def subscribed(user: str, event_type: str) -> str:
    """SQL: the merchant `user` has an enabled endpoint subscribed to `event_type` (SQL expressions)."""
    return (f'EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e."userId" = {user} AND e.enabled'
            f' AND {event_type} = ANY(e."eventTypes"))')


# Two CTEs (for a WITH list) over `{source}`, a CTE or subquery of ("userId", type, data). Defines
# `webhook_delivery`, one row per delivery queued.
OUTBOX = """
    webhook_event AS (
        INSERT INTO webhook_events ("userId", type, data)
        SELECT s."userId", s.type, s.data FROM {source} AS s
        WHERE """ + subscribed('s."userId"', "s.type") + """
        RETURNING id, "userId", type
    ),
    webhook_delivery AS (
        INSERT INTO webhook_deliveries ("eventId", "endpointId")
        SELECT ev.id, e.id FROM webhook_event AS ev
        JOIN webhook_endpoints AS e ON e."userId" = ev."userId" AND e.enabled AND ev.type = ANY(e."eventTypes")
        RETURNING id
    )"""

# Which moved ledger rows (`m`, whole `deliveries` rows) each message event is about.
MESSAGE_ROWS = {
    "message.sent": "m.status IN ('sent', 'delivered')",
    "message.delivered": "m.status = 'delivered'",
    "message.failed": "m.status = 'failed'",
    "message.opened": 'm."openedAt" IS NOT NULL',
    "message.clicked": 'm."clickedAt" IS NOT NULL',
}


def iso(column: str) -> str:
    """A naive UTC timestamp column as the API writes times (ISO 8601 with the offset)."""
    return f"""to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def message_event_ctes(moved: str, *event_types: str, extra: str = "'{}'::jsonb") -> str:
    """CTEs for a statement whose CTE `moved` returns the `deliveries` rows it changed (RETURNING *):
    one event per row and type the row now answers to (MESSAGE_ROWS), and its deliveries. Put them
    in the statement's WITH list after `moved`; `SELECT count(*) FROM webhook_delivery` says how
    many deliveries were queued. The merchant is the campaign's; its endpoints are probed once per
    campaign, before any payload is built."""
    for event_type in event_types:
        check(event_type)
    kinds = ", ".join(f"('{t}')" for t in event_types)
    applies = " OR ".join(f"(t.type = '{t}' AND {MESSAGE_ROWS[t]})" for t in event_types)
    return f"""
    webhook_merchant AS MATERIALIZED (
        SELECT c.id AS "campaignId", c."userId" FROM campaigns AS c
        WHERE c.id IN (SELECT "campaignId" FROM {moved})
          AND EXISTS (SELECT 1 FROM webhook_endpoints AS e WHERE e."userId" = c."userId" AND e.enabled)
    ),
    webhook_message AS (
        SELECT w."userId", t.type, jsonb_build_object(
            'deliveryId', m.id, 'campaignId', m."campaignId", 'channelId', m."channelId",
            'channel', m."channelType", 'contactId', m."contactId", 'address', m.address, 'status', m.status,
            'providerMessageId', m."providerMessageId", 'error', m.error, 'enrollmentId', m."enrollmentId",
            'flowId', (SELECT fe."flowId" FROM flow_enrollments AS fe WHERE fe.id = m."enrollmentId")) || {extra} AS data
        FROM {moved} AS m
        JOIN webhook_merchant AS w ON w."campaignId" = m."campaignId"
        JOIN (VALUES {kinds}) AS t(type) ON {applies}
    ),{OUTBOX.format(source="webhook_message")}"""


def _counted(statement: str) -> sa.TextClause:
    return sa.text(f"{statement}\nSELECT count(*) FROM webhook_delivery")


_EMIT = _counted(f"""
    WITH emitted AS (
        SELECT CAST(:user_id AS uuid) AS "userId", CAST(:type AS text) AS type, CAST(:data AS jsonb) AS data
    ),{OUTBOX.format(source="emitted")}""")


def emit(user_id: uuid.UUID, event_type: str, data: Mapping[str, Any]) -> int:
    """Write one event of `event_type` (from the catalogue) about the merchant's data in the
    caller's transaction, for each of the merchant's enabled endpoints subscribed to it; nothing
    when none is. The caller commits. Returns the deliveries queued."""
    count = db.session.scalar(_EMIT, {"user_id": str(user_id), "type": check(event_type),
                                      "data": orjson.dumps(data, option=orjson.OPT_NAIVE_UTC).decode()})
    written(count)
    return count or 0


def message_events(event_type: str, delivery_ids: Sequence[uuid.UUID], extra: Mapping[str, Any] | None = None) -> int:
    """`event_type` for ledger rows an earlier statement of the transaction changed (with `extra`
    fields in each event's data). The caller commits. Returns the deliveries queued."""
    if not delivery_ids:
        return 0
    statement = _counted(f"""
        WITH moved AS (SELECT * FROM deliveries WHERE id = ANY(CAST(:ids AS uuid[]))),
        {message_event_ctes("moved", event_type, extra="CAST(:extra AS jsonb)")}""")
    count = db.session.scalar(statement, {"ids": [str(i) for i in delivery_ids],
                                          "extra": orjson.dumps(dict(extra or {})).decode()})
    written(count)
    return count or 0


# `endedAt` equal to the transaction's start time: the campaign completed in this transaction
# (running → completed, or a cancel), whichever statement of it completed it; a campaign completed
# earlier and settled again later (a cancelled campaign's last messages) is not completed again.
_CAMPAIGN_COMPLETED = _counted(f"""
    WITH completed AS (
        SELECT c."userId", 'campaign.completed' AS type, jsonb_build_object(
            'campaignId', c.id, 'name', c.name, 'startedAt', {iso('c."startedAt"')}, 'endedAt', {iso('c."endedAt"')},
            'channels', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'channelId', ch.id, 'channel', ch."channelType", 'status', ch.status, 'sentCount', ch."sentCount",
                'deliveredCount', ch."deliveredCount", 'openedCount', ch."openedCount",
                'clickedCount', ch."clickedCount") ORDER BY ch."createdAt", ch.id), '[]')
                FROM campaign_channels AS ch WHERE ch."campaignId" = c.id)) AS data
        FROM campaigns AS c
        WHERE c.id = CAST(:campaign_id AS uuid) AND c.status = 'completed' AND c."endedAt" = CAST(now() AS timestamp)
    ),{OUTBOX.format(source="completed")}""")


def campaign_completed(campaign_id: uuid.UUID) -> int:
    """`campaign.completed`, if this transaction completed the campaign. The caller commits."""
    count = db.session.scalar(_CAMPAIGN_COMPLETED, {"campaign_id": str(campaign_id)})
    written(count)
    return count or 0


_FLOW_ENROLLED = _counted(f"""
    WITH entered AS (
        SELECT f."userId", 'flow.enrolled' AS type, jsonb_build_object(
            'flowId', f.id, 'flowName', f.name, 'enrollmentId', e.id, 'contactId', e."contactId",
            'status', e.status, 'exitReason', e."exitReason", 'triggeredAt', {iso('e."triggeredAt"')},
            'nextStepDueAt', {iso('e."nextDueAt"')}) AS data
        FROM flow_enrollments AS e JOIN flows AS f ON f.id = e."flowId"
        WHERE e.id = ANY(CAST(:ids AS uuid[]))
          AND EXISTS (SELECT 1 FROM webhook_endpoints AS w WHERE w."userId" = f."userId" AND w.enabled)
    ),{OUTBOX.format(source="entered")}""")


def flow_enrolled(enrollment_ids: Sequence[uuid.UUID]) -> int:
    """`flow.enrolled` for enrolments written earlier in the transaction. The caller commits."""
    if not enrollment_ids:
        return 0
    count = db.session.scalar(_FLOW_ENROLLED, {"ids": [str(i) for i in enrollment_ids]})
    written(count)
    return count or 0


def written(count: int | None) -> None:
    """Deliveries were queued in the current transaction: a delivery run starts a second after
    the commit, one for a whole burst of events (the first writer of each second asks for it). A
    hint lost (Redis down, that writer rolled back) only waits for the next run or beat's sweep."""
    if count:
        hint(tasks.DELIVER_WEBHOOKS, HINT_SECONDS * 1000, countdown=HINT_SECONDS)
