"""Addresses a merchant must not send to, whoever holds them: the list outlives the contact."""
from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from app.models.base import Base, created_at, uuid_pk

ADDRESS_KINDS = ("email", "phone")
SUPPRESSION_REASONS = ("bounced", "complained", "unsubscribed", "manual", "erased")


class Suppression(Base):
    """One address (an email, or a phone number in E.164) of one merchant. `addressHash` is the
    SHA-256 of the normalized address, which is what every check compares; `address` itself is
    dropped when the person is erased, so only the hash remains."""

    __tablename__ = "suppressions"
    __table_args__ = (
        sa.UniqueConstraint("userId", "kind", "addressHash"),
        sa.Index("ix_suppressions_user_created", "userId", "createdAt", "id"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)  # email | phone
    address: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    address_hash: orm.Mapped[str] = orm.mapped_column("addressHash", sa.String(), nullable=False)
    reason: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()
