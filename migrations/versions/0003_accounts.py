"""Accounts: case-insensitive email uniqueness and email verification mails.

Revision ID: 0003_accounts
Revises: 0002_token_expiry_indexes
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003_accounts"
down_revision = "0002_token_expiry_indexes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.create_table(
        "email_verifications",
        sa.Column("id", pg.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("tokenHash", sa.String(), nullable=True),
        sa.Column("expiresAt", sa.DateTime(), nullable=True),
        sa.Column("sentAt", sa.DateTime(), nullable=True),
        sa.Column("usedAt", sa.DateTime(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name="fk_email_verifications_userId_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_email_verifications"),
        sa.UniqueConstraint("tokenHash", name="uq_email_verifications_tokenHash"),
    )
    op.create_index("ix_email_verifications_userId", "email_verifications", ["userId"])
    op.create_index(
        "ix_email_verifications_pending", "email_verifications", ["createdAt"],
        postgresql_where=sa.text('"sentAt" IS NULL'),
    )


def downgrade():
    op.drop_table("email_verifications")
    op.drop_index("uq_users_email_lower", table_name="users")
