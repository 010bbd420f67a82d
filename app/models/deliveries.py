"""The send ledger: one row per campaign channel and contact, and the links its messages carry."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, bulk_uuid_pk, created_at, updated_at, uuid_pk

# queued → sending → sent → delivered; or failed / skipped / unknown. `unknown`: a crash left the
# outcome of a send unknown — reported, never retried (retrying could deliver twice).
DELIVERY_STATUSES = ("queued", "sending", "sent", "delivered", "failed", "skipped", "unknown")
FINAL_DELIVERY_STATUSES = ("sent", "delivered", "failed", "skipped", "unknown")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # A campaign's row per (channel, contact); a flow step's per (enrolment, channel).
        sa.Index("uq_deliveries_channel_contact", "channelId", "contactId", unique=True,
                 postgresql_where=sa.text('"enrollmentId" IS NULL')),
        sa.Index("uq_deliveries_enrollment_channel", "enrollmentId", "channelId", unique=True,
                 postgresql_where=sa.text('"enrollmentId" IS NOT NULL')),
        sa.Index("ix_deliveries_channel_status", "channelId", "status"),
        sa.Index("ix_deliveries_campaign_status", "campaignId", "status"),
        # The ledger listing, newest first, page by page (keyset) however big the campaign.
        sa.Index("ix_deliveries_campaign_created", "campaignId", "createdAt", "id"),
        # What attribution reads for each order: the contact's latest click, and latest open, before it.
        sa.Index("ix_deliveries_contact_clicked", "contactId", "clickedAt",
                 postgresql_where=sa.text('"clickedAt" IS NOT NULL')),
        sa.Index("ix_deliveries_contact_opened", "contactId", "openedAt",
                 postgresql_where=sa.text('"openedAt" IS NOT NULL')),
        sa.Index("ix_deliveries_provider_message", "providerMessageId",
                 postgresql_where=sa.text('"providerMessageId" IS NOT NULL')),
        # What a claim reads: a channel's queued rows that are due, in claim order, without sorting
        # them all or passing the ones that wait (quiet hours, a later local time, a provider's retry).
        sa.Index("ix_deliveries_due", "channelId", "notBefore", "createdAt", "id",
                 postgresql_where=sa.text("status = 'queued'")),
        # What a frequency cap counts: a contact's messages taken for sending lately.
        sa.Index("ix_deliveries_contact_claimed", "contactId", "claimedAt",
                 postgresql_where=sa.text('"claimedAt" IS NOT NULL')),
        # What the reaper reads every few seconds: the leases that may have lapsed, and only those.
        sa.Index("ix_deliveries_sending_lease", "leaseExpiresAt", postgresql_where=sa.text("status = 'sending'")),
    )

    id: orm.Mapped[uuid.UUID] = bulk_uuid_pk()
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    )
    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), nullable=False
    )
    # The ledger outlives a deleted contact: what was sent stays counted.
    contact_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="SET NULL")
    )
    # The flow enrolment a flow step's row belongs to (None: a campaign's row).
    enrollment_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column(
        "enrollmentId", sa.ForeignKey("flow_enrollments.id", ondelete="CASCADE"))
    channel_type: orm.Mapped[str] = orm.mapped_column("channelType", sa.String(), nullable=False)
    # The address at launch (email, E.164 phone, or push endpoint count) — what the send used.
    address: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="queued")
    skip_reason: orm.Mapped[str | None] = orm.mapped_column("skipReason", sa.String())
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    provider_message_id: orm.Mapped[str | None] = orm.mapped_column("providerMessageId", sa.String())
    # A sending row whose lease passed belongs to a worker that died mid-send: the reaper marks it
    # `unknown`, since the provider may or may not have taken the message.
    lease_expires_at: orm.Mapped[datetime | None] = orm.mapped_column("leaseExpiresAt", sa.DateTime())
    # A queued row goes out no earlier than this: its launch, its recipient's local time, the end of
    # their quiet hours, or a provider's retry (a relay's 4xx for this recipient). `attempts` counts
    # the provider's deferrals, so a recipient is retried a bounded number of times; `deferredBy`
    # says what last made the row wait (`quiet_hours`, `local_time`, `provider`).
    not_before: orm.Mapped[datetime | None] = orm.mapped_column("notBefore", sa.DateTime(), server_default=sa.func.now())
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    deferred_by: orm.Mapped[str | None] = orm.mapped_column("deferredBy", sa.String())
    # When the row was taken for sending: frequency caps count a contact's rows by it.
    claimed_at: orm.Mapped[datetime | None] = orm.mapped_column("claimedAt", sa.DateTime())
    # The A/B variant the recipient got (index into the channel's variants); None: no test.
    variant: orm.Mapped[int | None] = orm.mapped_column(sa.SmallInteger())
    sent_at: orm.Mapped[datetime | None] = orm.mapped_column("sentAt", sa.DateTime())
    delivered_at: orm.Mapped[datetime | None] = orm.mapped_column("deliveredAt", sa.DateTime())
    opened_at: orm.Mapped[datetime | None] = orm.mapped_column("openedAt", sa.DateTime())
    clicked_at: orm.Mapped[datetime | None] = orm.mapped_column("clickedAt", sa.DateTime())
    meta: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        "metadata", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()
    # The error the API shows: the row's own, or for a queued row its channel's send problem
    # (loaded by campaign_stats.deliveries_query; None elsewhere).
    shown_error: orm.Mapped[str | None] = orm.query_expression()


class MessageLink(Base):
    """A link a channel's messages carry. Click tracking redirects only to URLs stored here for
    the clicked message's channel (no open redirect)."""

    __tablename__ = "message_links"
    __table_args__ = (sa.UniqueConstraint("channelId", "url"),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), nullable=False
    )
    url: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()


class HeldReceipt(Base):
    """A provider's receipt for a message id the ledger does not know yet: the provider answered the
    send and called back before the sender recorded the id. Applied when the id is recorded."""

    __tablename__ = "held_receipts"
    __table_args__ = (sa.Index("ix_held_receipts_message", "channelType", "providerMessageId"),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    channel_type: orm.Mapped[str] = orm.mapped_column("channelType", sa.String(), nullable=False)
    provider_message_id: orm.Mapped[str] = orm.mapped_column("providerMessageId", sa.String(), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    created_at: orm.Mapped[datetime] = orm.mapped_column(
        "createdAt", sa.DateTime(), nullable=False, server_default=sa.func.now(), index=True
    )


class SendProblem(Base):
    """Why a campaign channel is not sending right now (the provider cannot be reached or refuses
    the account, it asked to slow down, a quota is used up), shown in its stats until a message
    goes out again."""

    __tablename__ = "send_problems"

    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), primary_key=True
    )
    code: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    message: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False)
    since: orm.Mapped[datetime] = orm.mapped_column(sa.DateTime(), nullable=False, server_default=sa.func.now())
    updated_at: orm.Mapped[datetime] = updated_at()


class LedgerPreparation(Base):
    """A launched campaign's ledger being written, chunk by chunk, by a worker: contacts up to
    `afterContactId` (in id order) are done. `finishedAt` set: every audience member has a row."""

    __tablename__ = "ledger_preparations"

    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    after_contact_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column("afterContactId", pg.UUID(as_uuid=True))
    rows_written: orm.Mapped[int] = orm.mapped_column("rowsWritten", sa.Integer(), nullable=False,
                                                      server_default=sa.text("0"))
    members: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    started_at: orm.Mapped[datetime] = orm.mapped_column("startedAt", sa.DateTime(), nullable=False,
                                                         server_default=sa.func.now())
    finished_at: orm.Mapped[datetime | None] = orm.mapped_column("finishedAt", sa.DateTime())
    updated_at: orm.Mapped[datetime] = updated_at()


class AbTest(Base):
    """A campaign channel's A/B test: its test group is sent at launch; when `endsAt` passes, the
    winning variant is chosen once (a guarded UPDATE of `winner`) and the rest of the audience gets it."""

    __tablename__ = "ab_tests"
    __table_args__ = (sa.Index("ix_ab_tests_undecided", "endsAt", postgresql_where=sa.text("winner IS NULL")),)

    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), primary_key=True
    )
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, index=True
    )
    ends_at: orm.Mapped[datetime] = orm.mapped_column("endsAt", sa.DateTime(), nullable=False)
    # Test-group members given a variant so far (the ledger's ranges take turns: member n gets n % k).
    assigned: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    winner: orm.Mapped[int | None] = orm.mapped_column(sa.SmallInteger())
    decided_at: orm.Mapped[datetime | None] = orm.mapped_column("decidedAt", sa.DateTime())
    # Each variant's score when the winner was chosen (the metric's rate over messages sent).
    scores: orm.Mapped[list[Any] | None] = orm.mapped_column(pg.JSONB())
