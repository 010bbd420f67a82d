"""The delivery ledger: one row per campaign channel and contact, and every move a row makes.

queued → sending (claimed under a lease, committed before the provider is called) → sent /
delivered / failed; or skipped at launch or cancel; or unknown when a worker died holding it. A row
is never handed to a provider twice: only `queued` rows are claimed, and a `sending` row whose lease
lapsed becomes `unknown`, not `queued`. Channel counters move in the same statement's transaction
as the rows that justify them (`col = col + n`).
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app import clock
from app.extensions import autocommit_engine, db, rowcount
from app.models import (
    Audience,
    Campaign,
    CampaignChannel,
    Contact,
    ContactTimezone,
    Delivery,
    HeldReceipt,
    LedgerPreparation,
    SendProblem,
    utcnow,
)
from app.models.contacts import zone_for
from app.models.flows import backs_a_flow
from app.services import ab_tests, audience_sql, audiences, bulk_sql, send_policies, suppressions, webhook_events
from app.services.prepared_statements import PreparedStatement

ERROR_MAX = 2000
RECEIPT_STATUSES = ("delivered", "read", "failed")


@dataclass(frozen=True)
class Chunk:
    rows: int  # ledger rows written
    finished: bool  # every audience member now has a row (or the campaign was cancelled)


def start_preparation(campaign_id: uuid.UUID) -> None:
    """Record that a launched campaign's ledger is to be written (by `write_range`). No commit."""
    db.session.execute(pg_insert(LedgerPreparation).values(campaignId=campaign_id).on_conflict_do_nothing())


@dataclass(frozen=True)
class RangeMembers:
    """The audience members among the merchant's contacts with ids in (after, upto] (upto None: to
    the end), each with the address and skip reason of every open channel, in `channel_ids` order,
    and (where a channel's policy needs it) the zone each member's messages are planned in."""

    after: uuid.UUID | None
    upto: uuid.UUID | None
    channel_ids: list[uuid.UUID]
    rows: Sequence[sa.Row[Any]]
    policies: list[send_policies.ChannelPolicy]
    zones: list[str] | None = None


def read_range(campaign_id: uuid.UUID, after: uuid.UUID | None, chunk_contacts: int) -> RangeMembers:
    """Who of the next `chunk_contacts` contacts (by id) is in the campaign's audiences, read-only and
    as a plain SELECT (PostgreSQL runs it in parallel, never the SELECT inside an INSERT), so it can
    be read on another connection while the previous range is written."""
    campaign = db.session.get_one(Campaign, campaign_id)
    in_range = [Contact.user_id == campaign.user_id] + ([Contact.id > after] if after else [])
    upto = db.session.scalar(sa.select(Contact.id).where(*in_range).order_by(Contact.id)
                             .offset(chunk_contacts - 1).limit(1))
    in_range += [Contact.id <= upto] if upto else []
    definitions = db.session.scalars(sa.select(Audience.definition).where(Audience.campaign_id == campaign.id)).all()
    channels = db.session.execute(
        sa.select(CampaignChannel.id, CampaignChannel.channel_type)
        .where(CampaignChannel.campaign_id == campaign.id, CampaignChannel.status.in_(("pending", "sending")))
        .order_by(CampaignChannel.created_at, CampaignChannel.id)
    ).all()
    policies = send_policies.channel_policies(campaign.user_id, campaign.id, [t for _, t in channels])
    columns: list[Any] = [Contact.id]
    for _, channel_type in channels:
        columns += _reach(campaign.user_id, channel_type)
    needs_zones = any(policy.needs_zones for policy in policies)
    if needs_zones:
        columns += _ZONE_COLUMNS
    selects = [audiences.compile_definition(campaign.user_id, d).where(*in_range) for d in definitions]
    rows: Sequence[sa.Row[Any]] = []
    if len(selects) == 1:  # the conditions straight on the contacts: no second pass over them
        rows = db.session.execute(selects[0].with_only_columns(*columns)).all()
    elif selects:  # (none: the audiences were deleted while scheduled, and nobody gets a row)
        matching = sa.union(*selects).subquery()
        rows = db.session.execute(sa.select(*columns).where(Contact.id.in_(sa.select(matching.c[0])))).all()
    zones = None
    if needs_zones:
        default = policies[0].default_zone
        zones = [zone_for(row[-2], row[-1], default) for row in map(tuple, rows)]
    return RangeMembers(after, upto, [channel_id for channel_id, _ in channels], rows, policies, zones)


def _reach(user_id: uuid.UUID, channel_type: str) -> list[Any]:
    """A contact's address on the channel, and why they are skipped there (None: they are not):
    no address, a suppressed address, or no consent."""
    address = audience_sql.contact_address(channel_type)
    consent = sa.func.coalesce(Contact.consent[channel_type].astext, "none")
    kind = suppressions.kind_for(channel_type)
    listed = [(suppressions.suppressed(user_id, kind, suppressions.contact_address(kind)),
               suppressions.SUPPRESSED)] if kind else []
    return [address, sa.case((address.is_(None), "no_address"), *listed,
                             (consent != "subscribed", sa.literal("consent_") + consent), else_=None)]


# What a row's planned time is read from: the contact's own zone, else their phone's.
_ZONE_COLUMNS = [sa.select(ContactTimezone.timezone).where(ContactTimezone.contact_id == Contact.id)
                 .scalar_subquery(), Contact.phone]


_INSERT_RANGE = sa.text(
    """
    INSERT INTO deliveries ("campaignId", "channelId", "contactId", "channelType", address, status, "skipReason",
                            "notBefore", "deferredBy", variant)
    SELECT CAST(:campaign_id AS uuid), channel.id, m.id, channel."channelType", m.address,
           CASE WHEN m.reason IS NULL THEN 'queued' ELSE 'skipped' END, m.reason,
           coalesce(m.at, CAST(:now AS timestamp)), m.by, m.variant
    FROM campaign_channels AS channel,
         jsonb_to_recordset(CAST(:members AS jsonb))
             AS m(id uuid, address text, reason text, at timestamp, by text, variant smallint)
    WHERE channel.id = CAST(:channel_id AS uuid)
    """
)


def write_range(campaign_id: uuid.UUID, members: RangeMembers) -> Chunk | None:
    """Write the range's ledger rows (one per channel and member; without an address or consent for
    the channel, `skipped` with the reason) and record the progress with them, so a range is written
    once whoever resumes. None: nothing to do here (finished, another worker is writing, or the
    range no longer follows the progress). No commit; the caller commits each range on its own."""
    preparation = db.session.scalar(sa.select(LedgerPreparation).where(LedgerPreparation.campaign_id == campaign_id)
                                    .with_for_update(skip_locked=True))
    if preparation is None or preparation.finished_at is not None or preparation.after_contact_id != members.after:
        return None
    # Shared lock: a cancel (a guarded UPDATE of this row) waits for the chunk, then skips its rows.
    status = db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id).with_for_update(read=True))
    if status is None or status == "completed":
        preparation.finished_at = utcnow()
        return Chunk(rows=0, finished=True)
    written, now = 0, clock.now()
    tests = ab_tests.Assignment(campaign_id, [row[0] for row in members.rows])
    for index, channel_id in enumerate(members.channel_ids):
        # No ON CONFLICT (its speculative insertion costs a third more): a range is written once,
        # and the (channel, contact) unique key would refuse a second row.
        if members.rows:
            rows = [{"id": row[0], "address": row[1 + 2 * index], "reason": row[2 + 2 * index]} for row in members.rows]
            _plan(rows, members.policies[index], members.zones, now)
            tests.assign(channel_id, rows)
            written += rowcount(db.session.execute(_INSERT_RANGE, {
                "campaign_id": str(campaign_id), "channel_id": str(channel_id), "members": bulk_sql.to_json(rows),
                "now": now}))
    db.session.execute(sa.update(CampaignChannel).where(CampaignChannel.id.in_(members.channel_ids),
                                                        CampaignChannel.status == "pending").values(status="sending"))
    preparation.after_contact_id, preparation.updated_at = members.upto, utcnow()
    preparation.rows_written += written
    preparation.members += len(members.rows)
    if members.upto is None:
        preparation.finished_at = utcnow()
    return Chunk(rows=written, finished=members.upto is None)


_INSERT_ENROLLED = sa.text(
    """
    INSERT INTO deliveries ("campaignId", "channelId", "contactId", "enrollmentId", "channelType", address, status,
                            "skipReason", "notBefore", "deferredBy")
    SELECT CAST(:campaign_id AS uuid), CAST(:channel_id AS uuid), m.id, m.enrollment, :channel_type, m.address,
           CASE WHEN m.reason IS NULL THEN 'queued' ELSE 'skipped' END, m.reason,
           coalesce(m.at, CAST(:now AS timestamp)), m.by
    FROM jsonb_to_recordset(CAST(:members AS jsonb))
        AS m(id uuid, enrollment uuid, address text, reason text, at timestamp, by text)
    ON CONFLICT ("enrollmentId", "channelId") WHERE "enrollmentId" IS NOT NULL DO NOTHING
    RETURNING status
    """
)


def write_enrolled(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_id: uuid.UUID, channel_type: str,
                   members: list[tuple[uuid.UUID, uuid.UUID]], policy: send_policies.ChannelPolicy,
                   now: datetime) -> int:
    """A flow step's ledger rows for (enrolment, contact) pairs, decided as a campaign's are (no
    address, suppressed or no consent: `skipped` with the reason; quiet hours: planned after them),
    at most one per enrolment and step. Returns the rows queued. No commit."""
    columns = [Contact.id, *_reach(user_id, channel_type)] + (_ZONE_COLUMNS if policy.needs_zones else [])
    found = {row[0]: row for row in db.session.execute(
        sa.select(*columns).where(Contact.user_id == user_id, Contact.id.in_({c for _, c in members})))}
    pairs = [(enrollment, found[contact]) for enrollment, contact in members if contact in found]
    rows = [{"id": row[0], "enrollment": enrollment, "address": row[1], "reason": row[2]} for enrollment, row in pairs]
    zones = [zone_for(row[3], row[4], policy.default_zone) for _, row in pairs] if policy.needs_zones else None
    _plan(rows, policy, zones, now)
    written = db.session.execute(_INSERT_ENROLLED, {
        "campaign_id": str(campaign_id), "channel_id": str(channel_id), "channel_type": channel_type,
        "members": bulk_sql.to_json(rows), "now": now}).scalars().all()
    return sum(1 for status in written if status == "queued")


def _plan(rows: list[dict[str, Any]], policy: send_policies.ChannelPolicy, zones: list[str] | None,
          now: datetime) -> None:
    """Each row's planned time and what made it wait, where the channel's policy says (local time,
    quiet hours); a recipient whose local time has passed and is to be skipped is skipped."""
    if not policy.needs_zones or zones is None:
        return
    planner = send_policies.Planner(policy, now)
    for row, zone in zip(rows, zones, strict=True):
        plan = planner.plan(zone)
        if plan.skip_reason is not None:
            row["reason"] = row["reason"] or plan.skip_reason
        elif plan.deferred_by is not None:
            row["at"], row["by"] = plan.not_before, plan.deferred_by


def idle_channels(campaign_id: uuid.UUID) -> list[uuid.UUID]:
    """The campaign's open channels with no row queued or in flight (so no sender is at work)."""
    busy = sa.select(Delivery.id).where(Delivery.channel_id == CampaignChannel.id,
                                        Delivery.status.in_(("queued", "sending"))).exists()
    return list(db.session.scalars(sa.select(CampaignChannel.id).where(
        CampaignChannel.campaign_id == campaign_id, CampaignChannel.status == "sending", ~busy)))


def preparing(campaign_id: Any) -> sa.ColumnElement[bool]:
    """The campaign's ledger is still being written: nothing may call it done."""
    return sa.select(LedgerPreparation.campaign_id).where(LedgerPreparation.campaign_id == campaign_id,
                                                          LedgerPreparation.finished_at.is_(None)).exists()


def preparation(campaign_id: uuid.UUID) -> LedgerPreparation | None:
    return db.session.get(LedgerPreparation, campaign_id)


def stalled_preparations(idle_seconds: float) -> list[uuid.UUID]:
    """Unfinished ledgers nobody has written to for `idle_seconds` (a worker died, a task was lost)."""
    idle_since = sa.func.timezone("UTC", sa.func.now()) - sa.func.make_interval(0, 0, 0, 0, 0, 0, idle_seconds)
    return list(db.session.scalars(sa.select(LedgerPreparation.campaign_id).where(
        LedgerPreparation.finished_at.is_(None), LedgerPreparation.updated_at < idle_since)))


def skip_queued(campaign_id: uuid.UUID, reason: str) -> int:
    return rowcount(db.session.execute(
        sa.update(Delivery).where(Delivery.campaign_id == campaign_id, Delivery.status == "queued")
        .values(status="skipped", skip_reason=reason, updated_at=sa.func.now())
    ))


@dataclass(frozen=True)
class ClaimedContact:
    """What a message is built from: the fields templates see (app.services.rendering.contact_context)."""

    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    attributes: dict[str, Any]
    external_ids: dict[str, Any]


@dataclass(frozen=True)
class ClaimedDelivery:
    id: uuid.UUID
    contact_id: uuid.UUID | None
    address: str
    contact: ClaimedContact | None  # None: the contact was deleted after launch
    attempts: int = 0  # times the provider deferred it before
    variant: int | None = None  # the A/B variant it gets
    own_zone: str | None = None  # the contact's own (or derived) timezone, if known
    event: dict[str, Any] | None = None  # a flow step's: the triggering event's properties


@dataclass(frozen=True)
class Outcome:
    delivery_id: uuid.UUID
    status: str  # sent | delivered | failed | unknown | queued (handed back: rate limited or deferred)
    provider_message_id: str | None = None
    error: str | None = None
    retry_in: float | None = None  # deferred: claimable again after this many seconds (a try counted)


# One statement, one round trip, on a connection without a transaction (each statement commits
# itself): record outcomes (moving the counters and writing their webhook events with them, and
# taking any receipts that arrived before their message ids), then claim more rows with their contacts. Rows handed back to the
# queue here are not claimed by the same statement: it sees them as they were.
_SETTLE = PreparedStatement("herald_settle", sa.text(
    f"""
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
            AS o(id uuid, status text, "providerMessageId" text, error text, "retryIn" float8)
    ),
    moved AS (
        UPDATE deliveries AS d SET
            status = o.status,
            "providerMessageId" = o."providerMessageId",
            error = o.error,
            "leaseExpiresAt" = NULL,
            "notBefore" = CASE WHEN o.status = 'queued'
                               THEN CAST(:now AS timestamp) + make_interval(secs => coalesce(o."retryIn", 0)) END,
            "deferredBy" = CASE WHEN o."retryIn" IS NOT NULL THEN 'provider' ELSE d."deferredBy" END,
            "claimedAt" = CASE WHEN o.status = 'queued' THEN NULL ELSE d."claimedAt" END,
            attempts = d.attempts + (o."retryIn" IS NOT NULL)::int,
            "sentAt" = CASE WHEN o.status IN ('sent', 'delivered') THEN now() END,
            "deliveredAt" = CASE WHEN o.status = 'delivered' THEN now() END,
            "updatedAt" = now()
        FROM outcome AS o
        WHERE d.id = o.id AND d.status = 'sending'
        RETURNING d.*
    ),
    counted AS (
        UPDATE campaign_channels SET
            "sentCount" = "sentCount" + (SELECT count(*) FROM moved WHERE status IN ('sent', 'delivered')),
            "deliveredCount" = "deliveredCount" + (SELECT count(*) FROM moved WHERE status = 'delivered'),
            "updatedAt" = now()
        WHERE id = CAST(:channel_id AS uuid) AND EXISTS (SELECT 1 FROM moved)
    ),{webhook_events.message_event_ctes("moved", "message.sent", "message.delivered", "message.failed")},
    cleared AS (
        -- A message went out: whatever kept the channel from sending is over.
        DELETE FROM send_problems
        WHERE "channelId" = CAST(:channel_id AS uuid)
          AND EXISTS (SELECT 1 FROM moved WHERE status IN ('sent', 'delivered'))
    ),
    held AS (
        DELETE FROM held_receipts AS h USING moved AS m
        WHERE h."channelType" = :channel_type AND h."providerMessageId" = m."providerMessageId"
          AND m.status = 'sent'
        RETURNING h."providerMessageId", h.status, h.error, h."createdAt"
    ),
    test AS (
        -- A/B: rows without a variant wait for the winner, and get it as they are claimed.
        SELECT t.winner FROM ab_tests AS t WHERE t."channelId" = CAST(:channel_id AS uuid)
    ),
    due AS (
        -- An address suppressed since the launch is skipped as it comes up, never sent.
        SELECT d.id, CAST(:kind AS text) IS NOT NULL AND EXISTS (
            SELECT 1 FROM suppressions AS s JOIN campaigns AS c ON c."userId" = s."userId"
            WHERE c.id = d."campaignId" AND s.kind = :kind
              AND s."addressHash" = encode(sha256(convert_to(lower(d.address), 'UTF8')), 'hex')) AS suppressed
        FROM deliveries AS d
        WHERE d."channelId" = CAST(:channel_id AS uuid) AND d.status = 'queued'
          AND d."notBefore" <= CAST(:now AS timestamp)
          AND (d.variant IS NOT NULL OR NOT EXISTS (SELECT 1 FROM test WHERE winner IS NULL))
          AND EXISTS (SELECT 1 FROM campaigns AS c WHERE c.id = d."campaignId" AND c.status = 'running')
        ORDER BY d."notBefore", d."createdAt", d.id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE deliveries AS d SET status = CASE WHEN due.suppressed THEN 'skipped' ELSE 'sending' END,
                                   "skipReason" = CASE WHEN due.suppressed THEN 'suppressed' ELSE d."skipReason" END,
                                   "leaseExpiresAt" = now() + make_interval(secs => :lease),
                                   "claimedAt" = CAST(:now AS timestamp),
                                   variant = coalesce(d.variant, (SELECT winner FROM test)), "updatedAt" = now()
        FROM due WHERE d.id = due.id
        RETURNING d.id, d."contactId", d.address, d.attempts, d.variant, d.status, d."enrollmentId"
    )
    SELECT
        (SELECT coalesce(json_agg(h ORDER BY h."createdAt"), '[]') FROM held AS h) AS held,
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT claimed.id, claimed."contactId", claimed.address, claimed.attempts, claimed.variant, c.email,
                   c.phone, c."firstName", c."lastName", c.attributes, c."externalIds", z.timezone,
                   a.properties AS event
            FROM claimed LEFT JOIN contacts AS c ON c.id = claimed."contactId"
                         LEFT JOIN contact_timezones AS z ON z."contactId" = claimed."contactId"
                         -- A flow step's message: the properties of the event that enrolled its contact.
                         LEFT JOIN flow_enrollments AS e ON e.id = claimed."enrollmentId"
                         LEFT JOIN contact_activities AS a ON a."dataEventId" = e."dataEventId"
            WHERE claimed.status = 'sending') AS x) AS claimed,
        (SELECT count(*) FROM webhook_delivery) AS webhooks
    """
))


def settle(channel_id: uuid.UUID, channel_type: str, outcomes: list[Outcome], claim_limit: int = 0,
           lease: timedelta = timedelta(0)) -> list[ClaimedDelivery]:
    """Record `outcomes` (only rows still `sending` move: a reaper that already called them
    `unknown` wins) and claim up to `claim_limit` queued rows while the campaign runs (none when it
    is paused), in one statement that commits itself: the claim is committed before the caller
    hands anything to a provider. Receipts that beat their message ids are applied on the caller's
    session, which the caller commits."""
    rows = [{"id": o.delivery_id, "status": o.status, "providerMessageId": o.provider_message_id,
             "error": (o.error or None) and o.error[:ERROR_MAX], "retryIn": o.retry_in} for o in outcomes]
    held, claimed, webhooks = _SETTLE.execute_in(db.session, autocommit_engine(), {
        "rows": bulk_sql.to_json(rows), "channel_id": str(channel_id), "channel_type": channel_type,
        "limit": claim_limit, "lease": lease.total_seconds(), "now": clock.now(),
        "kind": suppressions.kind_for(channel_type) if channel_type else None}).one()
    webhook_events.written(webhooks)
    for receipt in held:
        _apply_receipt(channel_type, receipt["providerMessageId"], receipt["status"], receipt["error"])
    return [_claimed(row) for row in claimed]


def _claimed(row: dict[str, Any]) -> ClaimedDelivery:
    contact_id = uuid.UUID(row["contactId"]) if row["contactId"] else None
    contact = None if row["attributes"] is None or contact_id is None else ClaimedContact(
        contact_id, row["email"], row["phone"], row["firstName"], row["lastName"], row["attributes"],
        row["externalIds"] or {})
    return ClaimedDelivery(uuid.UUID(row["id"]), contact_id, row["address"], contact, row["attempts"],
                           row["variant"], row["timezone"], row["event"])


def claim(channel_id: uuid.UUID, limit: int, lease: timedelta) -> list[ClaimedDelivery]:
    """Take up to `limit` queued rows for sending (committed at once), with their contacts."""
    return settle(channel_id, "", [], limit, lease)


def record(channel_id: uuid.UUID, channel_type: str, outcomes: list[Outcome]) -> None:
    """Settle claimed rows and move the channel's counters with them (committed at once)."""
    if outcomes:
        settle(channel_id, channel_type, outcomes)


_RENEW = sa.text(
    """
    UPDATE deliveries SET "leaseExpiresAt" = now() + make_interval(secs => :lease)
    WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'sending'
    """
)


def renew_leases(delivery_ids: list[uuid.UUID], lease: timedelta) -> int:
    """Extend the lease of rows a live sender still has in flight, in one statement that commits
    itself (rows already settled, or reaped, are left alone). Returns the rows renewed."""
    if not delivery_ids:
        return 0
    return rowcount(db.session.execute(
        _RENEW, {"ids": [str(i) for i in delivery_ids], "lease": lease.total_seconds()},
        bind_arguments={"bind": autocommit_engine()},
    ))


def reap_expired_leases() -> list[uuid.UUID]:
    """`sending` rows whose worker died: the provider may or may not have the message. They become
    `unknown` — reported, never retried. Returns the campaigns touched."""
    return list(set(db.session.scalars(
        sa.update(Delivery).where(Delivery.status == "sending", Delivery.lease_expires_at < sa.func.now())
        .values(status="unknown", error="The worker sending this message stopped; whether it was sent is unknown.",
                lease_expires_at=None, updated_at=sa.func.now())
        .returning(Delivery.campaign_id)
    ).all()))


def finish_done_channels(campaign_id: uuid.UUID) -> bool:
    """Channels with nothing queued or in flight become `sent` (or `failed` when every row failed);
    when all channels are final the campaign completes. True when the campaign is now completed.
    A flow's campaign is left alone: its channels stay open while the flow lives (flows.stop)."""
    if db.session.scalar(sa.select(backs_a_flow(campaign_id))):
        return False
    unsettled = sa.select(Delivery.id).where(Delivery.channel_id == CampaignChannel.id,
                                             Delivery.status.in_(("queued", "sending"))).exists()
    all_failed = sa.and_(
        sa.select(Delivery.id).where(Delivery.channel_id == CampaignChannel.id, Delivery.status == "failed").exists(),
        ~sa.select(Delivery.id).where(Delivery.channel_id == CampaignChannel.id,
                                      Delivery.status.in_(("sent", "delivered", "unknown"))).exists(),
    )
    db.session.execute(
        sa.update(CampaignChannel)
        .where(CampaignChannel.campaign_id == campaign_id, CampaignChannel.status.in_(("pending", "sending")),
               ~unsettled, ~preparing(campaign_id))
        .values(status=sa.case((all_failed, "failed"), else_="sent"), updated_at=sa.func.now())
    )
    open_channels = sa.select(CampaignChannel.id).where(
        CampaignChannel.campaign_id == campaign_id, CampaignChannel.status.in_(("pending", "sending"))).exists()
    completed = db.session.execute(
        sa.update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(("running", "completed")),
                                  ~open_channels)
        .values(status="completed", ended_at=sa.func.coalesce(Campaign.ended_at, sa.func.now()),
                updated_at=sa.func.now())
        .returning(Campaign.id)
    ).first()
    webhook_events.campaign_completed(campaign_id)
    return completed is not None


def campaign_status(campaign_id: uuid.UUID) -> str | None:
    return db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))


def channel_info(channel_id: uuid.UUID) -> tuple[CampaignChannel, Campaign] | None:
    row = db.session.execute(
        sa.select(CampaignChannel, Campaign).join(Campaign, Campaign.id == CampaignChannel.campaign_id)
        .where(CampaignChannel.id == channel_id)
    ).first()
    return (row[0], row[1]) if row else None


def contacts_by_id(ids: list[uuid.UUID]) -> dict[uuid.UUID, Contact]:
    return {c.id: c for c in db.session.scalars(sa.select(Contact).where(Contact.id.in_(ids)))}


def unsettled_channels() -> Sequence[sa.Row[uuid.UUID, uuid.UUID, datetime]]:
    """(campaign, channel, last change) for running campaigns with queued rows."""
    return db.session.execute(
        sa.select(Delivery.campaign_id, Delivery.channel_id, sa.func.min(Delivery.updated_at))
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Campaign.status == "running", Delivery.status == "queued")
        .group_by(Delivery.campaign_id, Delivery.channel_id)
    ).all()


def queued_by_channel(campaign_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """(channel, queued rows) for each open channel of the campaign, in the order they were added."""
    queued = sa.func.count(Delivery.id).filter(Delivery.status == "queued")
    return [(channel_id, count) for channel_id, count in db.session.execute(
        sa.select(CampaignChannel.id, queued)
        .outerjoin(Delivery, Delivery.channel_id == CampaignChannel.id)
        .where(CampaignChannel.campaign_id == campaign_id, CampaignChannel.status.in_(("pending", "sending")))
        .group_by(CampaignChannel.id).order_by(sa.func.min(CampaignChannel.created_at))
    )]


def report_problem(channel_id: uuid.UUID, code: str, message: str) -> None:
    """Say why the channel is not sending (`since` stays while the same problem lasts); cleared by
    the next message that goes out. The caller commits."""
    insert = pg_insert(SendProblem).values(channel_id=channel_id, code=code, message=message[:ERROR_MAX])
    db.session.execute(insert.on_conflict_do_update(
        index_elements=[SendProblem.channel_id],
        set_={"code": code, "message": insert.excluded.message, "updatedAt": sa.func.now(),
              "since": sa.case((SendProblem.code == code, SendProblem.since), else_=sa.func.now())},
    ))


def next_due(channel_id: uuid.UUID) -> float | None:
    """Seconds until the channel's next queued row may be claimed (0: now); None: nothing queued
    that could be claimed (rows waiting for an A/B test's winner are woken by its choice)."""
    now = clock.now()
    due_in = db.session.scalar(
        sa.select(sa.func.extract("epoch", sa.func.min(Delivery.not_before) - now))
        .where(Delivery.channel_id == channel_id, Delivery.status == "queued",
               sa.or_(Delivery.variant.is_not(None), ~ab_tests.undecided_gate(channel_id)))
    )
    return None if due_in is None else max(0.0, float(due_in))


def running_campaigns_without_work() -> list[uuid.UUID]:
    """Running campaigns with channels still open but nothing queued or in flight (a worker died
    between its last send and settling the channel)."""
    busy = sa.select(Delivery.id).where(Delivery.campaign_id == Campaign.id,
                                        Delivery.status.in_(("queued", "sending"))).exists()
    open_channel = sa.select(CampaignChannel.id).where(CampaignChannel.campaign_id == Campaign.id,
                                                       CampaignChannel.status == "sending").exists()
    return list(db.session.scalars(sa.select(Campaign.id).where(Campaign.status == "running", open_channel, ~busy,
                                                                ~preparing(Campaign.id), ~backs_a_flow(Campaign.id))))


# A provider's later word on a message it accepted. Each statement moves the row only from the
# state the status leaves, so a repeated or late callback changes nothing and counts nothing.
_DELIVERED = sa.text(
    f"""
    WITH moved AS (
        UPDATE deliveries SET status = 'delivered', "deliveredAt" = now(), "updatedAt" = now()
        WHERE "channelType" = :channel_type AND "providerMessageId" = :message_id AND status = 'sent'
        RETURNING *
    ),{webhook_events.message_event_ctes("moved", "message.delivered")}
    UPDATE campaign_channels SET "deliveredCount" = "deliveredCount" + 1, "updatedAt" = now()
    WHERE id IN (SELECT "channelId" FROM moved)
    RETURNING (SELECT count(*) FROM webhook_delivery)
    """
)
_OPENED = sa.text(
    f"""
    WITH moved AS (
        UPDATE deliveries SET "openedAt" = now(), "updatedAt" = now()
        WHERE "channelType" = :channel_type AND "providerMessageId" = :message_id AND "openedAt" IS NULL
          AND status IN ('sent', 'delivered')
        RETURNING *
    ),{webhook_events.message_event_ctes("moved", "message.opened")}
    UPDATE campaign_channels SET "openedCount" = "openedCount" + 1, "updatedAt" = now()
    WHERE id IN (SELECT "channelId" FROM moved)
    RETURNING (SELECT count(*) FROM webhook_delivery)
    """
)
_FAILED = sa.text(
    f"""
    WITH moved AS (
        UPDATE deliveries SET status = 'failed', error = :error, "updatedAt" = now()
        WHERE "channelType" = :channel_type AND "providerMessageId" = :message_id AND status = 'sent'
        RETURNING *
    ),{webhook_events.message_event_ctes("moved", "message.failed")}
    SELECT count(*) FROM webhook_delivery
    """
)


def apply_provider_status(channel_type: str, message_id: str, status: str, error: str | None = None) -> None:
    """Apply a delivery receipt: `delivered`, `read` (an open, which implies delivery), or `failed`
    (after acceptance: `sentCount` keeps it — counters never go backwards). A receipt for an id the
    ledger does not hold yet is kept and applied when the sender records it. The caller commits."""
    if status not in RECEIPT_STATUSES:
        return
    known = db.session.scalar(sa.select(Delivery.id).where(Delivery.channel_type == channel_type,
                                                           Delivery.provider_message_id == message_id).limit(1))
    if known is None:
        db.session.add(HeldReceipt(channel_type=channel_type, provider_message_id=message_id, status=status,
                                   error=error))
        return
    _apply_receipt(channel_type, message_id, status, error)


def _apply_receipt(channel_type: str, message_id: str, status: str, error: str | None) -> None:
    params = {"channel_type": channel_type, "message_id": message_id}
    webhooks = 0  # deliveries of the events each statement wrote with its move (webhook_events)
    if status in ("delivered", "read"):
        webhooks += db.session.scalar(_DELIVERED, params) or 0
    if status == "read":
        webhooks += db.session.scalar(_OPENED, params) or 0
    if status == "failed":
        error = (error or "The provider reported a failure.")[:ERROR_MAX]
        webhooks += db.session.scalar(_FAILED, {**params, "error": error}) or 0
    webhook_events.written(webhooks)


def apply_matched_held_receipts() -> int:
    """Beat: a receipt held while the sender's own transaction was still open (neither could see
    the other) is applied once its message id is in the ledger."""
    recorded = sa.select(Delivery.id).where(Delivery.channel_type == HeldReceipt.channel_type,
                                            Delivery.provider_message_id == HeldReceipt.provider_message_id)
    return _apply_held(recorded.exists())


def _apply_held(condition: sa.ColumnElement[bool]) -> int:
    held = db.session.scalars(sa.delete(HeldReceipt).where(condition).returning(HeldReceipt)).all()
    for receipt in sorted(held, key=lambda r: r.created_at):
        _apply_receipt(receipt.channel_type, receipt.provider_message_id, receipt.status, receipt.error)
    return len(held)
