"""A merchant's sending settings: one row per merchant, absent until they change a default."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, updated_at


class MerchantSettings(Base):
    __tablename__ = "merchant_settings"

    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    timezone: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default=sa.text("'UTC'"))
    quiet_hours: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        "quietHours", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    frequency_caps: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        "frequencyCaps", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    utm: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    attribution: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))
    updated_at: orm.Mapped[datetime] = updated_at()
