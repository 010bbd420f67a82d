"""Herald's backlogs and throughput as PostgreSQL knows them, read when Prometheus scrapes
(app.metrics): events waiting to be processed, deliveries waiting or in flight per channel, what
was sent and what providers said of it, sources whose syncs fail.

Each measure is one cheap statement over an index or a small table, and one entry of MEASURES:
measuring one more thing is adding one more entry. A measure may name the table it reads, and is
then left out while that table does not exist (a feature still being merged, an older schema).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import sqlalchemy as sa

from app.channels.catalogue import CHANNEL_TYPES
from app.extensions import db
from app.models.data_sources import SOURCE_TYPES
from app.services.transactions import snapshot

# A scrape must stay cheap whatever happens: past this a statement is cancelled and the read fails.
STATEMENT_TIMEOUT_MS = 2000
DELIVERY_BACKLOG = ("queued", "sending", "unknown")
RECEIPT_OUTCOMES = ("delivered", "bounced", "soft_bounced", "complained")

Labels = tuple[str, ...]


@dataclass(frozen=True)
class Measure:
    name: str
    kind: Literal["gauge", "counter"]
    help: str
    sql: str  # rows of (*label values, value)
    labels: Labels = ()
    zeros: Sequence[Labels] = ((),)  # label values reported as 0 when the statement returns no row for them
    table: str | None = None  # measured only while this table exists


MEASURES: tuple[Measure, ...] = (
    Measure(
        "herald_events_pending", "gauge", "Raw events ingested and not yet processed.",
        'SELECT count(*) FROM data_events WHERE "processedAt" IS NULL',
    ),
    Measure(
        "herald_events_oldest_pending_age_seconds", "gauge",
        "Age of the oldest raw event not yet processed (0 when none waits).",
        """SELECT coalesce(extract(epoch FROM (now() AT TIME ZONE 'UTC') - min("createdAt")), 0)
           FROM data_events WHERE "processedAt" IS NULL""",
    ),
    Measure(
        "herald_deliveries", "gauge",
        "Ledger rows per channel that are queued (waiting to be sent, retries and deferrals included), sending "
        "(with a provider now) or unknown (a sender died mid-send: the outcome needs a look).",
        # queued and sending through their partial indexes; unknown one index probe per channel.
        """SELECT "channelType", 'queued', count(*) FROM deliveries WHERE status = 'queued' GROUP BY 1
           UNION ALL
           SELECT "channelType", 'sending', count(*) FROM deliveries WHERE status = 'sending' GROUP BY 1
           UNION ALL
           SELECT cc."channelType", 'unknown', sum(u.n) FROM campaign_channels AS cc
           CROSS JOIN LATERAL (SELECT count(*) AS n FROM deliveries AS d
                               WHERE d."channelId" = cc.id AND d.status = 'unknown') AS u
           GROUP BY 1""",
        labels=("channel", "status"), zeros=tuple(product(CHANNEL_TYPES, DELIVERY_BACKLOG)),
    ),
    Measure(
        "herald_messages_sent", "counter",
        "Messages providers accepted, per channel (the campaign channels' sentCount; rate() is the send rate).",
        'SELECT "channelType", sum("sentCount") FROM campaign_channels GROUP BY 1',
        labels=("channel",), zeros=tuple((channel,) for channel in CHANNEL_TYPES),
    ),
    Measure(
        "herald_receipts_applied", "counter",
        "Providers' word on sent messages, applied to the ledger once per delivery: delivered (a receipt, or "
        "the hand-off on channels without receipts), bounced, soft_bounced, complained.",
        """SELECT "channelType", 'delivered', sum("deliveredCount") FROM campaign_channels GROUP BY 1
           UNION ALL
           SELECT cc."channelType", kind.outcome, sum(kind.n)
           FROM bounce_counts AS b JOIN campaign_channels AS cc ON cc.id = b."channelId"
           CROSS JOIN LATERAL (VALUES ('bounced', b."bouncedCount"), ('soft_bounced', b."softBouncedCount"),
                                      ('complained', b."complainedCount")) AS kind(outcome, n)
           GROUP BY 1, 2""",
        labels=("channel", "outcome"), zeros=tuple(product(CHANNEL_TYPES, RECEIPT_OUTCOMES)),
    ),
    Measure(
        "herald_flow_steps_due", "gauge",
        "Steps of running flows whose time has come and that beat has not yet written to the ledger.",
        """SELECT count(*) FROM flow_enrollments AS e JOIN flows AS f ON f.id = e."flowId" AND f.status = 'running'
           WHERE e.status = 'active' AND e."nextDueAt" <= (now() AT TIME ZONE 'UTC')""",
        table="flow_enrollments",
    ),
    Measure(
        "herald_flow_steps_oldest_due_age_seconds", "gauge",
        "How late the longest-waiting due flow step is (0 when none waits).",
        """SELECT coalesce(extract(epoch FROM (now() AT TIME ZONE 'UTC') - min(e."nextDueAt")), 0)
           FROM flow_enrollments AS e JOIN flows AS f ON f.id = e."flowId" AND f.status = 'running'
           WHERE e.status = 'active' AND e."nextDueAt" <= (now() AT TIME ZONE 'UTC')""",
        table="flow_enrollments",
    ),
    Measure(
        "herald_sources_failing", "gauge", "Data sources whose last sync failed (status error), per source type.",
        """SELECT "sourceType", count(*) FROM data_sources WHERE status = 'error' GROUP BY 1""",
        labels=("source_type",), zeros=tuple((source_type,) for source_type in SOURCE_TYPES),
    ),
)


@dataclass(frozen=True)
class Reading:
    measure: Measure
    values: dict[Labels, float]


def read(measures: Sequence[Measure] = MEASURES) -> list[Reading]:
    """Every measure, from one read-only snapshot. Raises what the database raises (unreachable,
    a statement past STATEMENT_TIMEOUT_MS)."""
    with snapshot():
        db.session.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        tables = {measure.table for measure in measures if measure.table}
        present = {name for name in tables
                   if db.session.scalar(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})}
        readings = []
        for measure in measures:
            if measure.table and measure.table not in present:
                continue
            values: dict[Labels, float] = dict.fromkeys(measure.zeros, 0.0)
            for *labels, value in db.session.execute(sa.text(measure.sql)):
                values[tuple(str(label) for label in labels)] = float(value or 0)
            readings.append(Reading(measure, values))
        return readings
