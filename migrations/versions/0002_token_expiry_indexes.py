"""Indexes for the hourly purge and per-user session lookups.

Revision ID: 0002_token_expiry_indexes
Revises: 0001_seed_tables
Create Date: 2026-11-26
"""
from alembic import op

revision = "0002_token_expiry_indexes"
down_revision = "0001_seed_tables"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_token_blacklist_expiresAt", "token_blacklist", ["expiresAt"])
    op.create_index("ix_user_sessions_expiresAt", "user_sessions", ["expiresAt"])
    op.create_index("ix_user_sessions_userId", "user_sessions", ["userId"])


def downgrade():
    op.drop_index("ix_user_sessions_userId", table_name="user_sessions")
    op.drop_index("ix_user_sessions_expiresAt", table_name="user_sessions")
    op.drop_index("ix_token_blacklist_expiresAt", table_name="token_blacklist")
