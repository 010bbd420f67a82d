"""Conversations: a merchant's chats with the assistant, and the messages in them.

Every function takes the owner's id: another user's conversation answers exactly like a missing one.
Deleting is a status change (campaigns created from a chat keep their `conversationId`), and a
deleted conversation is hidden from lists unless asked for and takes no new messages or changes.
Posting a message hands the answer to a worker (`assistant.reply`) once the message is committed.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from app import task_names as tasks
from app.errors import Conflict, NotFound
from app.extensions import db, rowcount
from app.jobs import enqueue_after_commit
from app.models import Conversation, Message

DELETED = "deleted"
CONVERSATION_FIELDS = ("title", "status")


def owned_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID, *, for_update: bool = False) -> Conversation:
    stmt = sa.select(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    # NO KEY UPDATE: serializes with other changes of the row, but not with a reply in progress that
    # holds KEY SHARE on it while linking a draft campaign (that may last as long as the model thinks).
    conversation = db.session.scalar(stmt.with_for_update(key_share=True) if for_update else stmt)
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def conversations_query(user_id: uuid.UUID, status: str | None = None) -> sa.Select[Conversation]:
    """The user's conversations, newest first; deleted ones only when asked for by status."""
    stmt = sa.select(Conversation).where(Conversation.user_id == user_id)
    stmt = stmt.where(Conversation.status == status if status is not None else Conversation.status != DELETED)
    return stmt.order_by(Conversation.created_at.desc(), Conversation.id.desc())


def create_conversation(user_id: uuid.UUID, title: str | None = None) -> Conversation:
    conversation = Conversation(user_id=user_id, title=title, status="active")
    db.session.add(conversation)
    db.session.commit()
    return conversation


def update_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID, changes: Mapping[str, Any]) -> Conversation:
    """Rename it, or move it between active and archived (the schema refuses other statuses)."""
    conversation = _open_conversation(user_id, conversation_id, for_update=True)
    for name in CONVERSATION_FIELDS:
        if name in changes:
            setattr(conversation, name, changes[name])
    db.session.commit()
    return conversation


def delete_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """Mark it deleted (idempotent): its messages and linked campaigns stay."""
    updated = db.session.execute(
        sa.update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
        .values(status=DELETED, updated_at=sa.func.now())
    )
    if rowcount(updated) == 0:
        raise NotFound("Conversation not found.")
    db.session.commit()


def messages_query(user_id: uuid.UUID, conversation_id: uuid.UUID) -> sa.Select[Message]:
    """The conversation's messages, oldest first."""
    owned_conversation(user_id, conversation_id)
    return (
        sa.select(Message).where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
    )


def post_message(user_id: uuid.UUID, conversation_id: uuid.UUID, content: str) -> Message:
    """Store the merchant's message; the assistant's reply is written by a worker."""
    # Locked: a concurrent delete either happens first (409 here) or waits for this message.
    conversation = _open_conversation(user_id, conversation_id, for_update=True)
    # Stamped when written, as replies are: a conversation reads in the order its messages were written.
    message = Message(conversation_id=conversation.id, role="user", content=content,
                      created_at=sa.func.clock_timestamp())
    db.session.add(message)
    conversation.updated_at = sa.func.now()
    db.session.flush()
    enqueue_after_commit(tasks.ASSISTANT_REPLY, str(message.id))
    db.session.commit()
    return message


def _open_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID, *, for_update: bool) -> Conversation:
    conversation = owned_conversation(user_id, conversation_id, for_update=for_update)
    if conversation.status == DELETED:
        raise Conflict("This conversation was deleted; start a new one.")
    return conversation
