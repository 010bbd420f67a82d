"""Bounces and complaints: what mailbox providers said about sent email, counted once per delivery."""
from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

BOUNCE_KINDS = ("bounce", "soft_bounce", "complaint", "dropped")
# Where it came from: mail to the bounce domain, the relay's refusal at send time, a provider's webhook.
BOUNCE_SOURCES = ("mail", "send", "ses", "sendgrid")


class BounceEvent(Base):
    """One kind of feedback about one delivery: a second report of the same kind changes nothing."""

    __tablename__ = "bounce_events"
    __table_args__ = (sa.UniqueConstraint("deliveryId", "kind"),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    delivery_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "deliveryId", sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False
    )
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    source: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    status: orm.Mapped[str | None] = orm.mapped_column(sa.String())  # enhanced status code, e.g. 5.1.1
    diagnostic: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    created_at: orm.Mapped[datetime] = created_at()


class BounceCount(Base):
    """A campaign channel's bounce and complaint tallies, moved with the events that justify them
    (campaign_channels is a seed table: its columns stay as they are)."""

    __tablename__ = "bounce_counts"

    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), primary_key=True
    )
    bounced_count: orm.Mapped[int] = orm.mapped_column("bouncedCount", sa.Integer(), nullable=False,
                                                       server_default=sa.text("0"))
    soft_bounced_count: orm.Mapped[int] = orm.mapped_column("softBouncedCount", sa.Integer(), nullable=False,
                                                            server_default=sa.text("0"))
    complained_count: orm.Mapped[int] = orm.mapped_column("complainedCount", sa.Integer(), nullable=False,
                                                          server_default=sa.text("0"))
    updated_at: orm.Mapped[datetime] = updated_at()


class BounceStreak(Base):
    """Soft bounces in a row of a contact's email address; a confirmed delivery or an open ends it."""

    __tablename__ = "bounce_streaks"

    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    address: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    soft_bounces: orm.Mapped[int] = orm.mapped_column("softBounces", sa.Integer(), nullable=False)
    updated_at: orm.Mapped[datetime] = updated_at()


class BounceMail(Base):
    """Mail received for the bounce domain that changed nothing, kept whole with the reason, for an
    operator to read: nothing the server accepts is lost."""

    __tablename__ = "bounce_mail"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    mail_from: orm.Mapped[str] = orm.mapped_column("mailFrom", sa.String(), nullable=False)
    recipients: orm.Mapped[list[str]] = orm.mapped_column(pg.ARRAY(sa.String()), nullable=False)
    raw: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary(), nullable=False)
    reason: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False)
    received_at: orm.Mapped[datetime] = orm.mapped_column("receivedAt", sa.DateTime(), nullable=False,
                                                          server_default=sa.func.now(), index=True)
