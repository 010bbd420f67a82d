"""The conversation aggregate: a merchant's chats with the assistant and their messages (seed tables)."""
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

CONVERSATION_STATUSES = ("active", "archived", "deleted")
MESSAGE_ROLES = ("user", "assistant")


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_ee34f4f7ced4ec8681f26bf04ef"),
        sa.Index("ix_conversations_userId", "userId"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", name="FK_a9b3b5d51da1c75242055338b59", ondelete="CASCADE"), nullable=False
    )
    title: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="active")
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    user: orm.Mapped[User] = orm.relationship(back_populates="conversations")
    messages: orm.Mapped[list[Message]] = orm.relationship(back_populates="conversation", passive_deletes=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.PrimaryKeyConstraint("id", name="PK_18325f38ae6de43878487eff986"),
        sa.Index("ix_messages_conversation_created", "conversationId", "createdAt"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    conversation_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "conversationId",
        sa.ForeignKey("conversations.id", name="FK_e5663ce0c730b2de83445e2fd19", ondelete="CASCADE"),
        nullable=False,
    )
    role: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    content: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False)
    # `metadata` is reserved on declarative classes, hence the attribute name.
    meta: orm.Mapped[dict[str, Any] | None] = orm.mapped_column("metadata", pg.JSONB())
    created_at: orm.Mapped[datetime] = created_at()

    conversation: orm.Mapped[Conversation] = orm.relationship(back_populates="messages")
