"""Orders credited to the message a contact last clicked or opened before placing them."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, uuid_pk


class Attribution(Base):
    """One order, credited once: the merchant's order key is unique, so a repeated order event (a
    webhook retried, the same purchase from the pixel and the shop) credits nothing more."""

    __tablename__ = "attributions"
    __table_args__ = (
        sa.UniqueConstraint("userId", "orderKey"),
        sa.Index("ix_attributions_campaignId", "campaignId"),
        # Deleting deliveries (a merchant's account going) or contacts (a merge, an erasure) looks
        # their credits up by these.
        sa.Index("ix_attributions_deliveryId", "deliveryId"),
        sa.Index("ix_attributions_contactId", "contactId"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    # `order:<orderId>` from the event's properties, or `event:<dataEventId>` for an order without one.
    order_key: orm.Mapped[str] = orm.mapped_column("orderKey", sa.String(), nullable=False)
    # The credit outlives a deleted contact, as the ledger does.
    contact_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="SET NULL")
    )
    delivery_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "deliveryId", sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False
    )
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False
    )
    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), nullable=False
    )
    channel_type: orm.Mapped[str] = orm.mapped_column("channelType", sa.String(), nullable=False)
    touch: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)  # click | open
    touched_at: orm.Mapped[datetime] = orm.mapped_column("touchedAt", sa.DateTime(), nullable=False)
    # The order's value and currency as the event gave them (either may be missing).
    revenue: orm.Mapped[Decimal | None] = orm.mapped_column(sa.Numeric())
    currency: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    occurred_at: orm.Mapped[datetime] = orm.mapped_column("occurredAt", sa.DateTime(), nullable=False)
    # The event that placed the order (not a foreign key: credits outlive the raw events).
    data_event_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column("dataEventId", pg.UUID(as_uuid=True))
    created_at: orm.Mapped[datetime] = created_at()
