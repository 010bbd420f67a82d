"""The campaign aggregate: campaigns and the channels they send through (seed tables)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

if TYPE_CHECKING:
    from app.models.conversations import Conversation
    from app.models.users import User

CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "completed")
CHANNEL_STATUSES = ("pending", "sending", "sent", "failed")
# The seed's channel statuses: sent and failed are final.
FINAL_CHANNEL_STATUSES = ("sent", "failed")


def _counter(column: str) -> orm.MappedColumn[int]:
    return orm.mapped_column(column, sa.Integer(), nullable=False, server_default=sa.text("0"))


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_831e3fcd4fc45b4e4c3f57a9ee4"),
        sa.Index("ix_campaigns_userId", "userId"),
        # What beat's launch sweep reads: scheduled campaigns by due time.
        sa.Index("ix_campaigns_due", "scheduledAt", postgresql_where=sa.text("status = 'scheduled'")),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", name="FK_b6c738ef1561082d235dfc20b43", ondelete="CASCADE"), nullable=False
    )
    # TypeORM gave this FK no ON DELETE rule: a conversation cannot be hard-deleted while it has campaigns.
    conversation_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column(
        "conversationId", sa.ForeignKey("conversations.id", name="FK_c444a1978bf4db13e7126155203")
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    description: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="draft")
    scheduled_at: orm.Mapped[datetime | None] = orm.mapped_column("scheduledAt", sa.DateTime())
    started_at: orm.Mapped[datetime | None] = orm.mapped_column("startedAt", sa.DateTime())
    ended_at: orm.Mapped[datetime | None] = orm.mapped_column("endedAt", sa.DateTime())
    config: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    user: orm.Mapped[User] = orm.relationship(back_populates="campaigns")
    conversation: orm.Mapped[Conversation | None] = orm.relationship()
    channels: orm.Mapped[list[CampaignChannel]] = orm.relationship(
        back_populates="campaign", passive_deletes=True, order_by="CampaignChannel.created_at"
    )
    audiences: orm.Mapped[list[Audience]] = orm.relationship(
        back_populates="campaign", passive_deletes=True, order_by="Audience.created_at"
    )
    send_options: orm.Mapped[CampaignSendOptions | None] = orm.relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )


PASSED_ZONES = ("next_day", "skip")


class CampaignSendOptions(Base):
    """How a campaign goes out beyond its channels (absent: the defaults). `localTime`: each
    recipient gets it at this wall-clock time in their own zone (`scheduledAt` is then when the
    first zone reaches it); zones it has passed at launch get it the next day or are skipped
    (`passedZones`). `frequencyCapExempt`: the merchant's frequency caps do not apply."""

    __tablename__ = "campaign_send_options"

    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    local_time: orm.Mapped[datetime | None] = orm.mapped_column("localTime", sa.DateTime())
    passed_zones: orm.Mapped[str] = orm.mapped_column("passedZones", sa.String(), nullable=False,
                                                      server_default=sa.text("'next_day'"))
    frequency_cap_exempt: orm.Mapped[bool] = orm.mapped_column("frequencyCapExempt", sa.Boolean(), nullable=False,
                                                               server_default=sa.text("false"))
    updated_at: orm.Mapped[datetime] = updated_at()


class CampaignChannel(Base):
    __tablename__ = "campaign_channels"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_27d3e75ca672ccee35f3336b7ab"),
        # A campaign has one channel per type (app.services.campaigns, under the campaign's row
        # lock); a flow's campaign has one per step, of any types.
        sa.Index("ix_campaign_channels_campaignId", "campaignId"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId",
        sa.ForeignKey("campaigns.id", name="FK_98637961e31a0cdff15db429307", ondelete="CASCADE"),
        nullable=False,
    )
    channel_type: orm.Mapped[str] = orm.mapped_column("channelType", sa.String(), nullable=False)
    config: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="pending")
    sent_count: orm.Mapped[int] = _counter("sentCount")
    delivered_count: orm.Mapped[int] = _counter("deliveredCount")
    opened_count: orm.Mapped[int] = _counter("openedCount")
    clicked_count: orm.Mapped[int] = _counter("clickedCount")
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    campaign: orm.Mapped[Campaign] = orm.relationship(back_populates="channels")


class Audience(Base):
    """Who a campaign targets: a definition (SPEC §6) compiled to one query over contacts."""

    __tablename__ = "audiences"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    definition: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    last_size: orm.Mapped[int | None] = orm.mapped_column("lastSize", sa.Integer())
    last_computed_at: orm.Mapped[datetime | None] = orm.mapped_column("lastComputedAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    campaign: orm.Mapped[Campaign] = orm.relationship(back_populates="audiences")


class DeletedCampaign(Base):
    """A campaign its merchant deleted after it had sent: gone from the API, kept in the database,
    because the unsubscribe and tracking links in messages people already have resolve through its
    ledger. A campaign that never sent is deleted outright."""

    __tablename__ = "deleted_campaigns"

    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    deleted_at: orm.Mapped[datetime] = orm.mapped_column("deletedAt", sa.DateTime(), nullable=False,
                                                         server_default=sa.func.now())
