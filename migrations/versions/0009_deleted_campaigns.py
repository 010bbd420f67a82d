"""Campaigns deleted after they sent: hidden from the API, kept for the links in their messages.

Revision ID: 0009_deleted_campaigns
Revises: 0008_conversation_indexes
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_deleted_campaigns"
down_revision = "0008_conversation_indexes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "deleted_campaigns",
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("deletedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"], name="fk_deleted_campaigns_campaignId_campaigns",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaignId", name="pk_deleted_campaigns"),
    )


def downgrade():
    op.drop_table("deleted_campaigns")
