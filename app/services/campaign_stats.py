"""What a campaign achieved: per-channel counters, the delivery ledger by status, rates, the orders
credited to its messages (app.services.attribution), and the ledger rows themselves. Read-only;
every function takes the owner's id (another user's campaign: 404).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app import clock
from app.errors import ValidationFailed
from app.extensions import db
from app.models import AbTest, BounceCount, CampaignChannel, Delivery, SendProblem
from app.models.deliveries import DELIVERY_STATUSES
from app.services import delivery_ledger
from app.services.attribution import Credited, credited_by_channel, credited_by_variant
from app.services.campaigns import owned_campaign

RATE_DECIMALS = 4


@dataclass(frozen=True)
class Tally:
    """Counters (from campaign_channels) and ledger rows by status (from deliveries)."""

    sent_count: int
    delivered_count: int
    opened_count: int
    clicked_count: int
    ledger: dict[str, int]
    deferred_count: int  # queued rows waiting for a later time (local time, quiet hours, a provider's retry)
    skip_reasons: dict[str, int]  # skipped rows by reason
    deferred_by: dict[str, int]  # rows that had to wait, by what made them wait (the last thing)
    credited: Credited  # orders credited to these messages
    # Deliveries a mailbox provider bounced (hard, or soft too often in a row), soft-bounced, or
    # that their recipient marked as spam (from bounce_counts): each delivery counted once.
    bounced_count: int
    soft_bounced_count: int
    complained_count: int

    @property
    def rates(self) -> dict[str, float]:
        # Some providers never confirm delivery; opens are then measured against what was sent.
        return {
            "delivery": _ratio(self.delivered_count, self.sent_count),
            "open": _ratio(self.opened_count, self.delivered_count or self.sent_count),
            "click": _ratio(self.clicked_count, self.delivered_count),
            "bounce": _ratio(self.bounced_count, self.sent_count),
            "complaint": _ratio(self.complained_count, self.sent_count),
        }

    @classmethod
    def total(cls, tallies: Iterable[Tally]) -> Tally:
        tallies = list(tallies)
        return cls(
            sent_count=sum(t.sent_count for t in tallies),
            delivered_count=sum(t.delivered_count for t in tallies),
            opened_count=sum(t.opened_count for t in tallies),
            clicked_count=sum(t.clicked_count for t in tallies),
            ledger={status: sum(t.ledger[status] for t in tallies) for status in DELIVERY_STATUSES},
            deferred_count=sum(t.deferred_count for t in tallies),
            skip_reasons=_summed(t.skip_reasons for t in tallies),
            deferred_by=_summed(t.deferred_by for t in tallies),
            credited=Credited.total(t.credited for t in tallies),
            bounced_count=sum(t.bounced_count for t in tallies),
            soft_bounced_count=sum(t.soft_bounced_count for t in tallies),
            complained_count=sum(t.complained_count for t in tallies),
        )


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


@dataclass
class VariantStats:
    """One A/B variant's share of a channel's ledger (counted from its rows)."""

    variant: int
    overrides: dict[str, Any]
    recipients: int = 0
    sent_count: int = 0
    delivered_count: int = 0
    opened_count: int = 0
    clicked_count: int = 0
    winner: bool = False
    score: float | None = None
    credited: Credited = field(default_factory=Credited)


@dataclass(frozen=True)
class AbTestStats:
    test_percent: float
    metric: str
    ends_at: datetime
    decided_at: datetime | None
    winner: int | None
    variants: list[VariantStats]


@dataclass(frozen=True)
class ChannelStats(Tally):
    channel_id: uuid.UUID
    channel_type: str
    status: str
    problem: SendProblem | None  # why the channel is not sending right now, if it is held up
    ab_test: AbTestStats | None = None


@dataclass(frozen=True)
class Preparation:
    """A launched campaign's ledger being written: `audience_size` once every chunk is written."""

    preparing: bool
    rows_written: int
    audience_size: int | None


@dataclass(frozen=True)
class CampaignStats:
    campaign_id: uuid.UUID
    status: str
    channels: list[ChannelStats]
    totals: Tally
    preparation: Preparation | None  # None: not launched


def campaign_stats(user_id: uuid.UUID, campaign_id: uuid.UUID) -> CampaignStats:
    """Each channel's counters and ledger, in the order the channels were added, their totals, and
    how far the writing of the ledger has come."""
    campaign = owned_campaign(user_id, campaign_id)
    channels = channel_stats(campaign.id)
    progress = delivery_ledger.preparation(campaign.id)
    preparation = None if progress is None else Preparation(
        preparing=progress.finished_at is None, rows_written=progress.rows_written,
        audience_size=progress.members if progress.finished_at is not None else None)
    return CampaignStats(campaign_id=campaign.id, status=campaign.status, channels=channels,
                         totals=Tally.total(channels), preparation=preparation)


def deliveries_query(user_id: uuid.UUID, campaign_id: uuid.UUID, status: str | None = None,
                     channel_id: uuid.UUID | None = None, after: uuid.UUID | None = None) -> sa.Select[Delivery]:
    """The campaign's ledger rows, newest first (for SelectPage), after the row `after` if given
    (keyset: the index on (campaign, createdAt, id) reads only the page, however deep). A queued row
    with no error of its own shows why its channel is held up, if it is."""
    owned_campaign(user_id, campaign_id)
    problem = sa.select(SendProblem.message).where(SendProblem.channel_id == Delivery.channel_id).scalar_subquery()
    shown = sa.case((Delivery.status == "queued", sa.func.coalesce(Delivery.error, problem)), else_=Delivery.error)
    stmt = sa.select(Delivery).where(Delivery.campaign_id == campaign_id).options(
        orm.with_expression(Delivery.shown_error, shown))
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    if channel_id is not None:
        stmt = stmt.where(Delivery.channel_id == channel_id)
    if after is not None:
        anchor = db.session.execute(sa.select(Delivery.created_at, Delivery.id)
                                    .where(Delivery.id == after, Delivery.campaign_id == campaign_id)).first()
        if anchor is None:
            raise ValidationFailed("No delivery of this campaign has that id.", errors={"after": ["Unknown delivery."]})
        stmt = stmt.where(sa.tuple_(Delivery.created_at, Delivery.id) < sa.tuple_(anchor.created_at, anchor.id))
    return stmt.order_by(Delivery.created_at.desc(), Delivery.id.desc())


def channel_stats(campaign_id: uuid.UUID) -> list[ChannelStats]:
    # One statement for counters and ledger, so both come from the same snapshot while sends go on.
    waiting = sa.func.count(Delivery.id).filter(Delivery.status == "queued", Delivery.not_before > clock.now())
    rows = db.session.execute(
        sa.select(CampaignChannel, SendProblem, BounceCount, Delivery.status, Delivery.skip_reason,
                  Delivery.deferred_by, Delivery.variant, sa.func.count(Delivery.id), waiting,
                  sa.func.count(Delivery.opened_at), sa.func.count(Delivery.clicked_at))
        .outerjoin(Delivery, Delivery.channel_id == CampaignChannel.id)
        .outerjoin(SendProblem, SendProblem.channel_id == CampaignChannel.id)
        .outerjoin(BounceCount, BounceCount.channel_id == CampaignChannel.id)
        .where(CampaignChannel.campaign_id == campaign_id)
        .group_by(CampaignChannel.id, SendProblem.channel_id, BounceCount.channel_id, Delivery.status,
                  Delivery.skip_reason,
                  Delivery.deferred_by, Delivery.variant)
        .order_by(CampaignChannel.created_at, CampaignChannel.id)
        .execution_options(populate_existing=True)
    )
    by_variant = credited_by_variant(campaign_id)
    credited = credited_by_channel(campaign_id, by_variant)
    channels: dict[uuid.UUID, tuple[CampaignChannel, SendProblem | None, BounceCount | None]] = {}
    ledgers: dict[uuid.UUID, dict[str, int]] = {}
    waiting_rows: dict[uuid.UUID, int] = {}
    skipped: dict[uuid.UUID, dict[str, int]] = {}
    deferred: dict[uuid.UUID, dict[str, int]] = {}
    variants: dict[uuid.UUID, dict[int, VariantStats]] = {}
    tests = {test.channel_id: test for test in db.session.scalars(
        sa.select(AbTest).where(AbTest.campaign_id == campaign_id))}
    for channel, problem, bounced, status, skip_reason, deferred_by, variant, count, waiting_count, opened, clicked \
            in rows:
        if channel.id not in channels:
            channels[channel.id] = (channel, problem, bounced)
            ledgers[channel.id] = dict.fromkeys(DELIVERY_STATUSES, 0)
            waiting_rows[channel.id], skipped[channel.id], deferred[channel.id] = 0, {}, {}
            variants[channel.id] = _variants(channel, tests.get(channel.id), by_variant)
        waiting_rows[channel.id] += waiting_count
        if status is None:  # the outer join's row for a channel without ledger rows
            continue
        ledgers[channel.id][status] += count
        if skip_reason is not None:
            skipped[channel.id][skip_reason] = skipped[channel.id].get(skip_reason, 0) + count
        if deferred_by is not None:
            deferred[channel.id][deferred_by] = deferred[channel.id].get(deferred_by, 0) + count
        if variant is not None and variant in variants[channel.id]:
            shown = variants[channel.id][variant]
            shown.recipients += count if status != "skipped" else 0
            shown.sent_count += count if status in ("sent", "delivered") else 0
            shown.delivered_count += count if status == "delivered" else 0
            shown.opened_count += opened
            shown.clicked_count += clicked
    return [
        ChannelStats(
            channel_id=channel.id, channel_type=channel.channel_type, status=channel.status,
            sent_count=channel.sent_count, delivered_count=channel.delivered_count,
            opened_count=channel.opened_count, clicked_count=channel.clicked_count, ledger=ledgers[channel.id],
            deferred_count=waiting_rows[channel.id], skip_reasons=skipped[channel.id],
            deferred_by=deferred[channel.id], credited=credited.get(channel.id, Credited()),
            bounced_count=bounced.bounced_count if bounced else 0,
            soft_bounced_count=bounced.soft_bounced_count if bounced else 0,
            complained_count=bounced.complained_count if bounced else 0,
            problem=problem, ab_test=_ab_test(channel, tests.get(channel.id), variants[channel.id]),
        )
        for channel, problem, bounced in channels.values()
    ]


def _variants(channel: CampaignChannel, test: AbTest | None,
              credited: dict[tuple[uuid.UUID, int | None], Credited]) -> dict[int, VariantStats]:
    spec = channel.config.get("abTest")
    if not spec:
        return {}
    scores = test.scores if test is not None and test.scores else []
    return {index: VariantStats(index, overrides, winner=test is not None and test.winner == index,
                                score=scores[index] if index < len(scores) else None,
                                credited=credited.get((channel.id, index), Credited()))
            for index, overrides in enumerate(spec["variants"])}


def _ab_test(channel: CampaignChannel, test: AbTest | None, variants: dict[int, VariantStats]) -> AbTestStats | None:
    spec = channel.config.get("abTest")
    if not spec or test is None:
        return None
    return AbTestStats(test_percent=spec["testPercent"], metric=spec["metric"], ends_at=test.ends_at,
                       decided_at=test.decided_at, winner=test.winner, variants=list(variants.values()))


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, RATE_DECIMALS) if whole else 0.0
