"""Outgoing webhooks: the merchant's endpoints, the outbox of events, and one delivery per event
and endpoint (its attempts, its retries, its answer)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

# pending (waiting for its first or next attempt, or being attempted under a lease) → succeeded, or
# failed (retried for WEBHOOK_RETRY_HOURS without a 2xx, or its endpoint was disabled meanwhile).
WEBHOOK_DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class WebhookEndpoint(Base):
    """A URL of the merchant's that receives the event types it subscribes to, signed with its
    secret (encrypted at rest: it is needed in clear to sign). Disabled after failing without a
    break for WEBHOOK_RETRY_HOURS; enabled again by the merchant."""

    __tablename__ = "webhook_endpoints"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    url: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False)
    description: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    event_types: orm.Mapped[list[str]] = orm.mapped_column("eventTypes", pg.ARRAY(sa.String()), nullable=False)
    secret: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    enabled: orm.Mapped[bool] = orm.mapped_column(sa.Boolean(), nullable=False, server_default=sa.true())
    disabled_at: orm.Mapped[datetime | None] = orm.mapped_column("disabledAt", sa.DateTime())
    disabled_reason: orm.Mapped[str | None] = orm.mapped_column("disabledReason", sa.Text())
    # Since when every attempt has failed (None: the last one succeeded), and how many in a row.
    failing_since: orm.Mapped[datetime | None] = orm.mapped_column("failingSince", sa.DateTime())
    consecutive_failures: orm.Mapped[int] = orm.mapped_column("consecutiveFailures", sa.Integer(), nullable=False,
                                                              server_default=sa.text("0"))
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction of the change it describes. Its id
    is what receivers de-duplicate by, the same on every attempt and replay."""

    __tablename__ = "webhook_events"
    __table_args__ = (sa.Index("ix_webhook_events_createdAt", "createdAt"),)  # what retention deletes by

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    type: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    data: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()


class WebhookDelivery(Base):
    """One event for one endpoint. Attempts are claimed under a lease (a worker killed mid-request
    leaves the row to be claimed again once it lapses: delivered at least once)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # What a claim reads: pending rows that are due, soonest first.
        sa.Index("ix_webhook_deliveries_due", "nextAttemptAt", postgresql_where=sa.text("status = 'pending'")),
        # The endpoint's delivery log, newest first, page by page.
        sa.Index("ix_webhook_deliveries_endpoint_created", "endpointId", "createdAt", "id"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    event_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "eventId", sa.ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False, index=True
    )
    endpoint_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "endpointId", sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="pending")
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    # Times below are the clock's (app.clock), so tests can move them; the lease is the real clock's.
    next_attempt_at: orm.Mapped[datetime] = orm.mapped_column("nextAttemptAt", sa.DateTime(), nullable=False,
                                                              server_default=sa.func.now())
    lease_expires_at: orm.Mapped[datetime | None] = orm.mapped_column("leaseExpiresAt", sa.DateTime())
    first_attempt_at: orm.Mapped[datetime | None] = orm.mapped_column("firstAttemptAt", sa.DateTime())
    last_attempt_at: orm.Mapped[datetime | None] = orm.mapped_column("lastAttemptAt", sa.DateTime())
    response_status: orm.Mapped[int | None] = orm.mapped_column("responseStatus", sa.SmallInteger())
    response_body: orm.Mapped[str | None] = orm.mapped_column("responseBody", sa.Text())
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    duration_ms: orm.Mapped[int | None] = orm.mapped_column("durationMs", sa.Integer())
    delivered_at: orm.Mapped[datetime | None] = orm.mapped_column("deliveredAt", sa.DateTime())
    # A replay is a new delivery of the same event (same event id), pointing at the one replayed.
    replay_of: orm.Mapped[uuid.UUID | None] = orm.mapped_column(
        "replayOf", sa.ForeignKey("webhook_deliveries.id", ondelete="SET NULL")
    )
    created_at: orm.Mapped[datetime] = created_at()

    event: orm.Mapped[WebhookEvent] = orm.relationship(lazy="raise")
