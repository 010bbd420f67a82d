"""Provider receipts held until the ledger records their message id.

Revision ID: 0007_held_receipts
Revises: 0006_provider_accounts
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_held_receipts"
down_revision = "0006_provider_accounts"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "held_receipts",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("channelType", sa.String(), nullable=False),
        sa.Column("providerMessageId", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_held_receipts"),
    )
    op.create_index("ix_held_receipts_message", "held_receipts", ["channelType", "providerMessageId"])
    op.create_index("ix_held_receipts_createdAt", "held_receipts", ["createdAt"])


def downgrade():
    op.drop_table("held_receipts")
