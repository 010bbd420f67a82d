"""Indexes for reading conversations and their messages in order.

Revision ID: 0008_conversation_indexes
Revises: 0007_held_receipts
Create Date: 2026-11-26
"""
from alembic import op

revision = "0008_conversation_indexes"
down_revision = "0007_held_receipts"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_conversations_userId", "conversations", ["userId"])
    op.create_index("ix_messages_conversation_created", "messages", ["conversationId", "createdAt"])


def downgrade():
    op.drop_index("ix_messages_conversation_created", table_name="messages")
    op.drop_index("ix_conversations_userId", table_name="conversations")
