"""Merchants' API keys and the records that make a retried POST answer once (idempotency keys)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, uuid_pk


class ApiKey(Base):
    """A key is `<prefix>_<secret>`: the prefix finds the row, only the secret's SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    prefix: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, unique=True)
    secret_hash: orm.Mapped[str] = orm.mapped_column("secretHash", sa.String(), nullable=False)
    scopes: orm.Mapped[list[str]] = orm.mapped_column(pg.ARRAY(sa.String()), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()
    # Written at most once a minute per key (app.services.api_keys), not on every request.
    last_used_at: orm.Mapped[datetime | None] = orm.mapped_column("lastUsedAt", sa.DateTime())
    revoked_at: orm.Mapped[datetime | None] = orm.mapped_column("revokedAt", sa.DateTime())


class IdempotencyKey(Base):
    """One POST's `Idempotency-Key` for 24 hours: claimed while the request runs (`lockedUntil` set,
    no response yet), then holding the answer to replay (its body sealed with DATA_ENCRYPTION_KEY)."""

    __tablename__ = "idempotency_keys"

    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: orm.Mapped[str] = orm.mapped_column(sa.String(), primary_key=True)
    request_hash: orm.Mapped[bytes] = orm.mapped_column("requestHash", sa.LargeBinary(), nullable=False)
    locked_until: orm.Mapped[datetime | None] = orm.mapped_column("lockedUntil", sa.DateTime())
    response_status: orm.Mapped[int | None] = orm.mapped_column("responseStatus", sa.SmallInteger())
    response_headers: orm.Mapped[list[Any] | None] = orm.mapped_column("responseHeaders", pg.JSONB())
    response_body: orm.Mapped[bytes | None] = orm.mapped_column("responseBody", sa.LargeBinary())
    created_at: orm.Mapped[datetime] = orm.mapped_column(
        "createdAt", sa.DateTime(), nullable=False, server_default=sa.func.now(), index=True
    )
