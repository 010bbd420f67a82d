"""Send policies: quiet hours, recipient-local schedules, frequency caps and A/B tests.

Every queued row now has a `notBefore` (when it may go out) and claims read the due ones through an
index on (channel, notBefore, createdAt); `claimedAt` is when a row was taken for sending, which
frequency caps count per contact; `deferredBy` says what made a row wait; `variant` is the A/B
variant a row got. Campaigns gain their send options (local-time schedule, cap exemption) and A/B
tests their own row (when the test ends, which variant won).

Revision ID: 0013_send_policies
Revises: 0012_merchant_settings
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_send_policies"
down_revision = "0012_merchant_settings"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("deliveries", sa.Column("claimedAt", sa.DateTime(), nullable=True))
    op.add_column("deliveries", sa.Column("deferredBy", sa.String(), nullable=True))
    op.add_column("deliveries", sa.Column("variant", sa.SmallInteger(), nullable=True))
    op.alter_column("deliveries", "notBefore", server_default=sa.text("now()"))
    op.execute('UPDATE deliveries SET "notBefore" = "createdAt" WHERE status = \'queued\' AND "notBefore" IS NULL')
    op.execute('UPDATE deliveries SET "claimedAt" = "sentAt" WHERE "sentAt" IS NOT NULL')
    op.drop_index("ix_deliveries_queued", table_name="deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["channelId", "notBefore", "createdAt", "id"],
                    postgresql_where=sa.text("status = 'queued'"))
    op.create_index("ix_deliveries_contact_claimed", "deliveries", ["contactId", "claimedAt"],
                    postgresql_where=sa.text('"claimedAt" IS NOT NULL'))
    op.create_table(
        "campaign_send_options",
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("localTime", sa.DateTime(), nullable=True),
        sa.Column("passedZones", sa.String(), server_default=sa.text("'next_day'"), nullable=False),
        sa.Column("frequencyCapExempt", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"],
                                name=op.f("fk_campaign_send_options_campaignId_campaigns"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaignId", name=op.f("pk_campaign_send_options")),
    )
    op.create_table(
        "ab_tests",
        sa.Column("channelId", sa.UUID(), nullable=False),
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("endsAt", sa.DateTime(), nullable=False),
        sa.Column("assigned", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("winner", sa.SmallInteger(), nullable=True),
        sa.Column("decidedAt", sa.DateTime(), nullable=True),
        sa.Column("scores", sa.dialects.postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(["channelId"], ["campaign_channels.id"],
                                name=op.f("fk_ab_tests_channelId_campaign_channels"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"],
                                name=op.f("fk_ab_tests_campaignId_campaigns"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channelId", name=op.f("pk_ab_tests")),
    )
    op.create_index("ix_ab_tests_undecided", "ab_tests", ["endsAt"], postgresql_where=sa.text("winner IS NULL"))
    op.create_index("ix_ab_tests_campaignId", "ab_tests", ["campaignId"])


def downgrade():
    op.drop_index("ix_ab_tests_campaignId", table_name="ab_tests")
    op.drop_index("ix_ab_tests_undecided", table_name="ab_tests")
    op.drop_table("ab_tests")
    op.drop_table("campaign_send_options")
    op.drop_index("ix_deliveries_contact_claimed", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index("ix_deliveries_queued", "deliveries", ["channelId", "createdAt", "id"],
                    postgresql_where=sa.text("status = 'queued'"))
    op.alter_column("deliveries", "notBefore", server_default=None)
    op.drop_column("deliveries", "variant")
    op.drop_column("deliveries", "deferredBy")
    op.drop_column("deliveries", "claimedAt")
