"""The send engine at provider speed: queued rows found in claim order without a sort; rows a
provider deferred (a relay's 4xx for one recipient) wait until their time with a count of tries;
and why a channel is not sending (send_problems).

Revision ID: 0010_send_engine
Revises: 0009_deleted_campaigns
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_send_engine"
down_revision = "0009_deleted_campaigns"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("deliveries", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("deliveries", sa.Column("notBefore", sa.DateTime(), nullable=True))
    op.create_index("ix_deliveries_queued", "deliveries", ["channelId", "createdAt", "id"],
                    postgresql_where=sa.text("status = 'queued'"))
    op.create_table(
        "send_problems",
        sa.Column("channelId", sa.UUID(), nullable=False),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["channelId"], ["campaign_channels.id"],
                                name="fk_send_problems_channelId_campaign_channels", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channelId", name="pk_send_problems"),
    )


def downgrade():
    op.drop_table("send_problems")
    op.drop_index("ix_deliveries_queued", table_name="deliveries")
    op.drop_column("deliveries", "notBefore")
    op.drop_column("deliveries", "attempts")
