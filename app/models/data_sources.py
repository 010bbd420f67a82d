"""The data-source aggregate: connected sources and the raw events they deliver (seed tables)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

if TYPE_CHECKING:
    from app.models.users import User

SOURCE_TYPES = ("shopify", "facebook_pixel", "gtm")
SOURCE_STATUSES = ("active", "inactive", "error")


class DataSource(Base):
    __tablename__ = "data_sources"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_dc70b1c6b641726739857fd938d"),
        sa.Index("ix_data_sources_userId", "userId"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", name="FK_d5f47731efcdc25badbca454ad2", ondelete="CASCADE"), nullable=False
    )
    source_type: orm.Mapped[str] = orm.mapped_column("sourceType", sa.String(), nullable=False)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    config: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="active")
    last_sync_at: orm.Mapped[datetime | None] = orm.mapped_column("lastSyncAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    user: orm.Mapped[User] = orm.relationship(back_populates="data_sources")
    events: orm.Mapped[list[DataEvent]] = orm.relationship(back_populates="data_source", passive_deletes=True)


class DataEvent(Base):
    __tablename__ = "data_events"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_cd59d7c7abb032ef628cb1640d0"),
        # The processing queue: only unprocessed rows, oldest first.
        sa.Index("ix_data_events_pending", "createdAt", postgresql_where=sa.text('"processedAt" IS NULL')),
        sa.Index("ix_data_events_source_created", "dataSourceId", "createdAt"),
        # What retention reads: processed events by age.
        sa.Index("ix_data_events_processed", "processedAt", postgresql_where=sa.text('"processedAt" IS NOT NULL')),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    data_source_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "dataSourceId",
        sa.ForeignKey("data_sources.id", name="FK_17180d03a6492b47b8ac13ccc33", ondelete="CASCADE"),
        nullable=False,
    )
    event_type: orm.Mapped[str] = orm.mapped_column("eventType", sa.String(), nullable=False)
    event_data: orm.Mapped[dict[str, Any]] = orm.mapped_column("eventData", pg.JSONB(), nullable=False)
    processed_at: orm.Mapped[datetime | None] = orm.mapped_column("processedAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()

    data_source: orm.Mapped[DataSource] = orm.relationship(back_populates="events")
