"""The account aggregate: users, their login sessions and revoked access tokens (seed tables)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import orm

from app.models.base import Base, created_at, updated_at, uuid_pk

if TYPE_CHECKING:
    from app.models.campaigns import Campaign
    from app.models.conversations import Conversation
    from app.models.data_sources import DataSource


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_a3ffb1c0c8416b9fc6f907b7433"),
        sa.UniqueConstraint("email", name="UQ_97672ac88f789774dd47f7c8be3"),
        # Emails are unique case-insensitively but stored as given.
        sa.Index("uq_users_email_lower", sa.text("lower(email)"), unique=True),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    email: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    password_hash: orm.Mapped[str] = orm.mapped_column("passwordHash", sa.String(), nullable=False)
    first_name: orm.Mapped[str | None] = orm.mapped_column("firstName", sa.String())
    last_name: orm.Mapped[str | None] = orm.mapped_column("lastName", sa.String())
    company_name: orm.Mapped[str | None] = orm.mapped_column("companyName", sa.String())
    is_verified: orm.Mapped[bool] = orm.mapped_column("isVerified", sa.Boolean(), nullable=False, server_default=sa.false())
    last_login_at: orm.Mapped[datetime | None] = orm.mapped_column("lastLoginAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    conversations: orm.Mapped[list[Conversation]] = orm.relationship(back_populates="user", passive_deletes=True)
    data_sources: orm.Mapped[list[DataSource]] = orm.relationship(back_populates="user", passive_deletes=True)
    campaigns: orm.Mapped[list[Campaign]] = orm.relationship(back_populates="user", passive_deletes=True)
    sessions: orm.Mapped[list[UserSession]] = orm.relationship(back_populates="user", passive_deletes=True)


class UserSession(Base):
    __tablename__ = "user_sessions"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_e93e031a5fed190d4789b6bfd83"),
        sa.UniqueConstraint("accessTokenJti", name="UQ_23ff1a10a966b209b3e9c7d5ca7"),
        sa.Index("ix_user_sessions_expiresAt", "expiresAt"),
        sa.Index("ix_user_sessions_userId", "userId"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", name="FK_55fa4db8406ed66bc7044328427", ondelete="CASCADE"), nullable=False
    )
    refresh_token_hash: orm.Mapped[str] = orm.mapped_column("refreshTokenHash", sa.String(), nullable=False)
    access_token_jti: orm.Mapped[str | None] = orm.mapped_column("accessTokenJti", sa.String())
    expires_at: orm.Mapped[datetime] = orm.mapped_column("expiresAt", sa.DateTime(), nullable=False)
    is_revoked: orm.Mapped[bool] = orm.mapped_column("isRevoked", sa.Boolean(), nullable=False, server_default=sa.false())
    ip_address: orm.Mapped[str | None] = orm.mapped_column("ipAddress", sa.String())
    user_agent: orm.Mapped[str | None] = orm.mapped_column("userAgent", sa.String())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    user: orm.Mapped[User] = orm.relationship(back_populates="sessions")


class TokenBlacklist(Base):
    __tablename__ = "token_blacklist"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_3e37528d03f0bd5335874afa48d"),
        sa.UniqueConstraint("jti", name="UQ_73e5965ffdbd4a9f2de7c93043c"),
        sa.Index("ix_token_blacklist_expiresAt", "expiresAt"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    jti: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", name="FK_cde27adb955c236798ccf3b9d5c", ondelete="CASCADE"), nullable=False
    )
    expires_at: orm.Mapped[datetime] = orm.mapped_column("expiresAt", sa.DateTime(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()

    user: orm.Mapped[User] = orm.relationship()


class EmailVerification(Base):
    """One verification mail for an account: sent by a worker, used at most once, expires in 48 h.

    `tokenHash` is NULL until a worker mints the token it mails, and is committed before the mail
    goes out (minting is the worker's claim; `expiresAt` tells when it was made). `sentAt` NULL with
    no live claim means a sweep must (re)send it.
    """

    __tablename__ = "email_verifications"
    __table_args__ = (sa.Index("ix_email_verifications_pending", "createdAt", postgresql_where=sa.text('"sentAt" IS NULL')),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: orm.Mapped[str | None] = orm.mapped_column("tokenHash", sa.String(), unique=True)
    expires_at: orm.Mapped[datetime | None] = orm.mapped_column("expiresAt", sa.DateTime())
    sent_at: orm.Mapped[datetime | None] = orm.mapped_column("sentAt", sa.DateTime())
    used_at: orm.Mapped[datetime | None] = orm.mapped_column("usedAt", sa.DateTime())
    created_at: orm.Mapped[datetime] = created_at()


class AccountDeletion(Base):
    """A merchant who asked for their account to be deleted: signed out and locked out at once, their
    data deleted by a worker in bounded batches; the row goes with the user's at the end."""

    __tablename__ = "account_deletions"

    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    requested_at: orm.Mapped[datetime] = orm.mapped_column("requestedAt", sa.DateTime(), nullable=False,
                                                           server_default=sa.func.now())
    updated_at: orm.Mapped[datetime] = updated_at()
