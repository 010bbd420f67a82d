"""A merchant's credentials for the outside services that carry SMS, WhatsApp and web push."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk


class ProviderAccount(Base):
    """One per merchant and channel type; `config` holds the provider's settings with its secrets
    encrypted (app.security.secret_box), never returned in clear."""

    __tablename__ = "provider_accounts"
    __table_args__ = (
        sa.UniqueConstraint("userId", "channelType"),
        sa.Index("ix_provider_accounts_account_ref", "channelType", "accountRef"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    channel_type: orm.Mapped[str] = orm.mapped_column("channelType", sa.String(), nullable=False)
    # Status callbacks name the provider's account (Twilio's AccountSid, WhatsApp's phone number
    # id): this finds the merchant's credentials to verify them with.
    account_ref: orm.Mapped[str | None] = orm.mapped_column("accountRef", sa.String())
    config: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()
