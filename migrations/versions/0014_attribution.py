"""Attribution: orders credited to the message a contact last clicked or opened before placing
them (one row per merchant and order), and the indexes that find a contact's latest click and open
without reading their whole ledger (partial: only messages someone engaged with).

Revision ID: 0014_attribution
Revises: 0013_send_policies
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_attribution"
down_revision = "0013_send_policies"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "attributions",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("orderKey", sa.String(), nullable=False),
        sa.Column("contactId", sa.UUID(), nullable=True),
        sa.Column("deliveryId", sa.UUID(), nullable=False),
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("channelId", sa.UUID(), nullable=False),
        sa.Column("channelType", sa.String(), nullable=False),
        sa.Column("touch", sa.String(), nullable=False),
        sa.Column("touchedAt", sa.DateTime(), nullable=False),
        sa.Column("revenue", sa.Numeric(), nullable=True),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("occurredAt", sa.DateTime(), nullable=False),
        sa.Column("dataEventId", sa.UUID(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_attributions_userId_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contactId"], ["contacts.id"], name=op.f("fk_attributions_contactId_contacts"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["deliveryId"], ["deliveries.id"], name=op.f("fk_attributions_deliveryId_deliveries"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"], name=op.f("fk_attributions_campaignId_campaigns"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["channelId"], ["campaign_channels.id"],
                                name=op.f("fk_attributions_channelId_campaign_channels"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attributions")),
        sa.UniqueConstraint("userId", "orderKey", name=op.f("uq_attributions_userId_orderKey")),
    )
    op.create_index("ix_attributions_campaignId", "attributions", ["campaignId"])
    op.create_index("ix_attributions_deliveryId", "attributions", ["deliveryId"])
    op.create_index("ix_attributions_contactId", "attributions", ["contactId"])
    op.create_index("ix_deliveries_contact_clicked", "deliveries", ["contactId", "clickedAt"],
                    postgresql_where=sa.text('"clickedAt" IS NOT NULL'))
    op.create_index("ix_deliveries_contact_opened", "deliveries", ["contactId", "openedAt"],
                    postgresql_where=sa.text('"openedAt" IS NOT NULL'))


def downgrade():
    op.drop_index("ix_deliveries_contact_opened", table_name="deliveries")
    op.drop_index("ix_deliveries_contact_clicked", table_name="deliveries")
    op.drop_table("attributions")
