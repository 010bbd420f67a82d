"""A/B tests on a campaign channel: 2–7 variants of its message, tried on a share of the audience.

A channel's config may carry `abTest`: `variants` (each overrides fields of the config, e.g. the
subject), `testPercent` of the audience split evenly between them, the `metric` that picks the
winner and `durationMinutes`. At launch the test gets its row (`ab_tests`, ending `durationMinutes`
later); the ledger gives each test-group member a variant in turn (member n gets n % k) and the
rest of the audience no variant and a time no earlier than the test's end. A claim takes rows
without a variant only once a winner is recorded, and gives them the winner as it claims them, so
every recipient gets exactly one variant, once. The winner is chosen once (a guarded UPDATE), from
the ledger: the variant with the highest metric per message sent; a tie goes to the first of them.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app import clock
from app.extensions import db
from app.models import AbTest, CampaignChannel, Delivery
from app.services import attribution

METRICS = ("unique_opens", "unique_clicks", "attributed_revenue")
BUCKETS = 10_000  # test membership in steps of 0.01 % of the audience


def variant_configs(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each variant's whole config (the channel's, with the variant's fields over it); None: no test."""
    test = config.get("abTest")
    if not test:
        return None
    base = {key: value for key, value in config.items() if key != "abTest"}
    return [{**base, **variant} for variant in test["variants"]]


def start(campaign_id: uuid.UUID, now: datetime) -> None:
    """At launch: each channel with an A/B test gets its test row, ending its duration from now. No commit."""
    channels = db.session.execute(sa.select(CampaignChannel.id, CampaignChannel.config).where(
        CampaignChannel.campaign_id == campaign_id, CampaignChannel.config.has_key("abTest"))).all()
    for channel_id, config in channels:
        ends_at = now + timedelta(minutes=config["abTest"]["durationMinutes"])
        db.session.execute(pg_insert(AbTest).values(channelId=channel_id, campaignId=campaign_id, endsAt=ends_at)
                           .on_conflict_do_nothing())


def _bucket(campaign_id: uuid.UUID, contact_id: uuid.UUID) -> int:
    digest = hashlib.blake2b(campaign_id.bytes + contact_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Assignment:
    """Variants for one ledger range: the caller holds the campaign's preparation lock, so the
    tests' turn counters move in the range's own transaction."""

    def __init__(self, campaign_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]) -> None:
        self._tests = {test.channel_id: test for test in db.session.scalars(
            sa.select(AbTest).where(AbTest.campaign_id == campaign_id))}
        self._specs: dict[uuid.UUID, dict[str, Any]] = {}
        self._buckets: list[int] = []
        if self._tests:
            self._specs = {channel_id: config["abTest"] for channel_id, config in db.session.execute(
                sa.select(CampaignChannel.id, CampaignChannel.config).where(CampaignChannel.id.in_(self._tests)))}
            self._buckets = [_bucket(campaign_id, contact_id) for contact_id in contact_ids]

    def assign(self, channel_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
        test = self._tests.get(channel_id)
        if test is None:
            return
        spec = self._specs[channel_id]
        variants, threshold = len(spec["variants"]), round(spec["testPercent"] * BUCKETS / 100)
        assigned = test.assigned
        for row, bucket in zip(rows, self._buckets, strict=True):
            if bucket < threshold:
                row["variant"] = assigned % variants
                assigned += 1
            elif row.get("at") is None or row["at"] < test.ends_at:
                row["at"] = test.ends_at  # the rest waits for the winner
        test.assigned = assigned


def undecided_gate(channel_id: Any) -> sa.ColumnElement[bool]:
    """The channel has a test whose winner is not chosen yet: its rows without a variant wait."""
    return sa.select(AbTest.channel_id).where(AbTest.channel_id == channel_id, AbTest.winner.is_(None)).exists()


def decide(test: AbTest, metric: str, variants: int) -> int:
    """Choose and record the test's winner (the caller holds its row locked and commits)."""
    sent = sa.func.count(Delivery.id).filter(Delivery.status.in_(("sent", "delivered")))
    measured = {variant: (opened, clicked, count) for variant, opened, clicked, count in db.session.execute(
        sa.select(Delivery.variant, sa.func.count(Delivery.opened_at), sa.func.count(Delivery.clicked_at), sent)
        .where(Delivery.channel_id == test.channel_id, Delivery.variant.is_not(None))
        .group_by(Delivery.variant))}
    revenue = attribution.revenue_by_variant(test.channel_id) if metric == "attributed_revenue" else {}
    scores = []
    for index in range(variants):
        opened, clicked, count = measured.get(index, (0, 0, 0))
        value = {"unique_opens": opened, "unique_clicks": clicked}.get(metric, revenue.get(index, 0.0))
        scores.append(round(value / count, 6) if count else 0.0)
    winner = max(range(variants), key=lambda index: (scores[index], -index))
    test.winner, test.decided_at, test.scores = winner, clock.now(), scores
    return winner
