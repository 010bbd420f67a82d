"""Herald's own state around the seed's data sources: ingest keys, de-duplication, processing
failures, sync runs, and the webhook subscriptions Herald keeps in Shopify shops."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

SYNC_STATUSES = ("running", "succeeded", "failed")


class IngestKey(Base):
    """The hash of a pixel/GTM source's ingest key (the key itself is shown once, never stored)."""

    __tablename__ = "data_source_ingest_keys"

    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataSourceId", sa.ForeignKey("data_sources.id", ondelete="CASCADE"), primary_key=True
    )
    key_hash: orm.Mapped[str] = orm.mapped_column("keyHash", sa.String(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()


class EventDedupeKey(Base):
    """A provider's event identity already stored for a source (webhook id, event_id + event_name).

    Ingest inserts keys and events in one statement; a key that already exists drops its event.
    """

    __tablename__ = "data_event_keys"
    __table_args__ = (sa.PrimaryKeyConstraint("dataSourceId", "dedupeKey"),)

    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataSourceId", sa.ForeignKey("data_sources.id", ondelete="CASCADE"), nullable=False
    )
    dedupe_key: orm.Mapped[str] = orm.mapped_column("dedupeKey", sa.String(), nullable=False)
    created_at: orm.Mapped[datetime] = orm.mapped_column(
        "createdAt", sa.DateTime(), nullable=False, server_default=sa.func.now(), index=True
    )


class EventFailure(Base):
    """Why an event could not be processed; `quarantinedAt` set means processing gave up on it."""

    __tablename__ = "data_event_failures"

    data_event_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataEventId", sa.ForeignKey("data_events.id", ondelete="CASCADE"), primary_key=True
    )
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    last_error: orm.Mapped[str] = orm.mapped_column("lastError", sa.Text(), nullable=False)
    quarantined_at: orm.Mapped[datetime | None] = orm.mapped_column("quarantinedAt", sa.DateTime())
    updated_at: orm.Mapped[datetime] = updated_at()


class SyncRun(Base):
    """One run of a source's sync. At most one per source is `running` (a partial unique index)."""

    __tablename__ = "data_source_sync_runs"
    __table_args__ = (
        sa.Index("uq_data_source_sync_runs_running", "dataSourceId", unique=True,
                 postgresql_where=sa.text("status = 'running'")),
        sa.Index("ix_data_source_sync_runs_source_started", "dataSourceId", "startedAt"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataSourceId", sa.ForeignKey("data_sources.id", ondelete="CASCADE"), nullable=False
    )
    trigger: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)  # manual | schedule
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="running")
    started_at: orm.Mapped[datetime] = orm.mapped_column(
        "startedAt", sa.DateTime(), nullable=False, server_default=sa.func.now()
    )
    # A run whose lease passed without finishing was lost with its worker; the reaper fails it.
    lease_expires_at: orm.Mapped[datetime] = orm.mapped_column("leaseExpiresAt", sa.DateTime(), nullable=False)
    finished_at: orm.Mapped[datetime | None] = orm.mapped_column("finishedAt", sa.DateTime())
    events_created: orm.Mapped[int] = orm.mapped_column(
        "eventsCreated", sa.Integer(), nullable=False, server_default=sa.text("0")
    )
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text())
    details: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )


class ShopifyWebhookRegistration(Base):
    """The webhook subscriptions Herald keeps in a Shopify source's shop (`subscriptions`: topic →
    subscription GID). `generation` grows with every change that calls for registering again; a
    worker holds the row by `claim` until `leaseExpiresAt` while it talks to Shopify."""

    __tablename__ = "shopify_webhook_registrations"

    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataSourceId", sa.ForeignKey("data_sources.id", ondelete="CASCADE"), primary_key=True
    )
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="pending", index=True)
    generation: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("1"))
    callback_url: orm.Mapped[str | None] = orm.mapped_column("callbackUrl", sa.String())
    subscriptions: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    last_error: orm.Mapped[str | None] = orm.mapped_column("lastError", sa.Text())
    claim: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    lease_expires_at: orm.Mapped[datetime | None] = orm.mapped_column("leaseExpiresAt", sa.DateTime())
    requested_at: orm.Mapped[datetime] = orm.mapped_column(
        "requestedAt", sa.DateTime(), nullable=False, server_default=sa.func.now()
    )
    registered_at: orm.Mapped[datetime | None] = orm.mapped_column("registeredAt", sa.DateTime())
    updated_at: orm.Mapped[datetime] = updated_at()


class ShopifyWebhookRemoval(Base):
    """Subscriptions to delete from a shop with the credentials that made them (the token
    encrypted): those of a deleted source, or of a source's shop or token before they changed."""

    __tablename__ = "shopify_webhook_removals"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column("dataSourceId", pg.UUID(as_uuid=True), nullable=False,
                                                              index=True)
    shop_domain: orm.Mapped[str] = orm.mapped_column("shopDomain", sa.String(), nullable=False)
    api_version: orm.Mapped[str] = orm.mapped_column("apiVersion", sa.String(), nullable=False)
    access_token: orm.Mapped[str] = orm.mapped_column("accessToken", sa.String(), nullable=False)
    subscription_ids: orm.Mapped[list[str]] = orm.mapped_column("subscriptionIds", pg.JSONB(), nullable=False)
    attempts: orm.Mapped[int] = orm.mapped_column(sa.Integer(), nullable=False, server_default=sa.text("0"))
    last_error: orm.Mapped[str | None] = orm.mapped_column("lastError", sa.Text())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()
