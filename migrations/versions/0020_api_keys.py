"""API keys (a merchant's scoped keys, stored as the hash of their secret) and idempotency keys
(one POST's answer, kept 24 hours for its retries).

Revision ID: 0020_api_keys
Revises: 0019_bounces
Create Date: 2026-12-12
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0020_api_keys"
down_revision = "0019_bounces"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("secretHash", sa.String(), nullable=False),
        sa.Column("scopes", pg.ARRAY(sa.String()), nullable=False),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("lastUsedAt", sa.DateTime(), nullable=True),
        sa.Column("revokedAt", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_api_keys_userId_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index("ix_api_keys_userId", "api_keys", ["userId"])
    op.create_table(
        "idempotency_keys",
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("requestHash", sa.LargeBinary(), nullable=False),
        sa.Column("lockedUntil", sa.DateTime(), nullable=True),
        sa.Column("responseStatus", sa.SmallInteger(), nullable=True),
        sa.Column("responseHeaders", pg.JSONB(), nullable=True),
        sa.Column("responseBody", sa.LargeBinary(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_idempotency_keys_userId_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("userId", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_createdAt", "idempotency_keys", ["createdAt"])


def downgrade():
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
