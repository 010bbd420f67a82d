"""Triggered flows: a flow, its steps and the contacts enrolled in it.

A flow is backed by a campaign of its own (never listed among campaigns) whose channels are the
flow's steps, so a step's messages go through the campaign send engine and ledger unchanged.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, bulk_uuid_pk, created_at, updated_at, uuid_pk

FLOW_STATUSES = ("draft", "running", "paused", "completed")
ENROLLMENT_STATUSES = ("active", "completed", "exited")
REENTRY_MODES = ("once", "afterDays", "always")


class Flow(Base):
    __tablename__ = "flows"
    __table_args__ = (
        sa.Index("ix_flows_userId_created", "userId", "createdAt", "id"),
        sa.Index("ix_flows_running", "userId", postgresql_where=sa.text("status = 'running'")),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    campaign_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "campaignId", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False, unique=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="draft")
    trigger: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    filter: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(pg.JSONB())
    exit_when: orm.Mapped[list[dict[str, Any]]] = orm.mapped_column(
        "exitWhen", pg.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb"))
    reentry: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    activated_at: orm.Mapped[datetime | None] = orm.mapped_column("activatedAt", sa.DateTime())
    stopped_at: orm.Mapped[datetime | None] = orm.mapped_column("stoppedAt", sa.DateTime())
    # Deleted after it sent messages: hidden, its ledger kept for the links in those messages.
    deleted_at: orm.Mapped[datetime | None] = orm.mapped_column("deletedAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    steps: orm.Mapped[list[FlowStep]] = orm.relationship(
        order_by="FlowStep.position", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin")


class FlowStep(Base):
    __tablename__ = "flow_steps"
    __table_args__ = (sa.UniqueConstraint("flowId", "position"),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    flow_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "flowId", sa.ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    position: orm.Mapped[int] = orm.mapped_column(sa.SmallInteger(), nullable=False)
    # Seconds after the previous step (the first: after the triggering event's own time).
    delay_seconds: orm.Mapped[int] = orm.mapped_column("delaySeconds", sa.Integer(), nullable=False)
    channel_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "channelId", sa.ForeignKey("campaign_channels.id", ondelete="CASCADE"), nullable=False, unique=True)
    # The step's messages ignore the frequency caps (e.g. a back-in-stock alert); they still count.
    frequency_cap_exempt: orm.Mapped[bool] = orm.mapped_column(
        "frequencyCapExempt", sa.Boolean(), nullable=False, server_default=sa.text("false"))

    channel: orm.Mapped[Any] = orm.relationship("CampaignChannel", lazy="joined")


class FlowEnrollment(Base):
    """One contact's way through a flow, for one triggering event. `step` is the next step to run,
    due at `nextDueAt`; the triggering event's properties are the templates' `event`."""

    __tablename__ = "flow_enrollments"
    __table_args__ = (
        # Only `once` enrolments carry the key: the others write no entry here.
        sa.Index("uq_flow_enrollments_once", "flowId", "onceKey", unique=True,
                 postgresql_where=sa.text('"onceKey" IS NOT NULL')),
        sa.Index("ix_flow_enrollments_due", "nextDueAt", postgresql_where=sa.text("status = 'active'")),
        sa.Index("ix_flow_enrollments_contact", "contactId", "flowId", "triggeredAt"),
        sa.Index("ix_flow_enrollments_flow_created", "flowId", "createdAt", "id"),
    )

    id: orm.Mapped[uuid.UUID] = bulk_uuid_pk()
    # The flow's and the contact's ids, without foreign keys (a check per inserted row): migration
    # 0027 says what keeps them true. A deleted flow takes its enrolments; a deleted contact's go NULL.
    flow_id: orm.Mapped[uuid.UUID] = orm.mapped_column("flowId", pg.UUID(as_uuid=True), nullable=False)
    contact_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column("contactId", pg.UUID(as_uuid=True))
    data_event_id: orm.Mapped[uuid.UUID] = orm.mapped_column("dataEventId", pg.UUID(as_uuid=True), nullable=False)
    # A `once` flow's enrolment holds its contact here: the unique key lets each contact in once,
    # whichever of two concurrent transactions gets there first. NULL for the other modes.
    once_key: orm.Mapped[uuid.UUID | None] = orm.mapped_column("onceKey", pg.UUID(as_uuid=True))
    triggered_at: orm.Mapped[datetime] = orm.mapped_column("triggeredAt", sa.DateTime(), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="active")
    exit_reason: orm.Mapped[str | None] = orm.mapped_column("exitReason", sa.String())
    step: orm.Mapped[int] = orm.mapped_column(sa.SmallInteger(), nullable=False, server_default=sa.text("0"))
    next_due_at: orm.Mapped[datetime | None] = orm.mapped_column("nextDueAt", sa.DateTime())
    ended_at: orm.Mapped[datetime | None] = orm.mapped_column("endedAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()


def backs_a_flow(campaign_id: Any) -> sa.ColumnElement[bool]:
    """True where the campaign is a flow's own: it is run by the flow, never as a campaign."""
    return sa.exists().where(Flow.campaign_id == campaign_id)
