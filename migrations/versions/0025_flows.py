"""Triggered flows: a flow (its trigger, filter, exits and re-entry rule) backed by a campaign whose
channels are its steps, and the enrolments of contacts in it. Ledger rows of a flow step belong to
one enrolment: a contact who enters again gets the step again, once per enrolment.

Revision ID: 0025_flows
Revises: 0023_shopify_webhooks
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0025_flows"
down_revision = "0023_shopify_webhooks"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "flows",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), server_default="draft", nullable=False),
        sa.Column("trigger", pg.JSONB(), nullable=False),
        sa.Column("filter", pg.JSONB(), nullable=True),
        sa.Column("exitWhen", pg.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("reentry", pg.JSONB(), nullable=False),
        sa.Column("activatedAt", sa.DateTime(), nullable=True),
        sa.Column("stoppedAt", sa.DateTime(), nullable=True),
        sa.Column("deletedAt", sa.DateTime(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_flows_userId_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"], name=op.f("fk_flows_campaignId_campaigns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sa.UniqueConstraint("campaignId", name=op.f("uq_flows_campaignId")),
    )
    op.create_index("ix_flows_userId_created", "flows", ["userId", "createdAt", "id"])
    op.create_index("ix_flows_running", "flows", ["userId"], postgresql_where=sa.text("status = 'running'"))
    op.create_table(
        "flow_steps",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("flowId", sa.UUID(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("delaySeconds", sa.Integer(), nullable=False),
        sa.Column("channelId", sa.UUID(), nullable=False),
        sa.Column("frequencyCapExempt", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(["flowId"], ["flows.id"], name=op.f("fk_flow_steps_flowId_flows"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["channelId"], ["campaign_channels.id"],
                                name=op.f("fk_flow_steps_channelId_campaign_channels"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_steps")),
        sa.UniqueConstraint("flowId", "position", name=op.f("uq_flow_steps_flowId_position")),
        sa.UniqueConstraint("channelId", name=op.f("uq_flow_steps_channelId")),
    )
    op.create_table(
        "flow_enrollments",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("flowId", sa.UUID(), nullable=False),
        sa.Column("contactId", sa.UUID(), nullable=True),
        sa.Column("dataEventId", sa.UUID(), nullable=False),
        sa.Column("onceKey", sa.UUID(), nullable=True),
        sa.Column("triggeredAt", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(), server_default="active", nullable=False),
        sa.Column("exitReason", sa.String(), nullable=True),
        sa.Column("step", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("nextDueAt", sa.DateTime(), nullable=True),
        sa.Column("context", pg.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("endedAt", sa.DateTime(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["flowId"], ["flows.id"], name=op.f("fk_flow_enrollments_flowId_flows"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contactId"], ["contacts.id"], name=op.f("fk_flow_enrollments_contactId_contacts"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_enrollments")),
        sa.UniqueConstraint("flowId", "dataEventId", name=op.f("uq_flow_enrollments_flowId_dataEventId")),
        sa.UniqueConstraint("flowId", "onceKey", name=op.f("uq_flow_enrollments_flowId_onceKey")),
    )
    op.create_index("ix_flow_enrollments_due", "flow_enrollments", ["nextDueAt"],
                    postgresql_where=sa.text("status = 'active'"))
    op.create_index("ix_flow_enrollments_contact", "flow_enrollments", ["contactId", "flowId", "triggeredAt"])
    op.create_index("ix_flow_enrollments_flow_created", "flow_enrollments", ["flowId", "createdAt", "id"])
    op.add_column("deliveries", sa.Column("enrollmentId", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_deliveries_enrollmentId_flow_enrollments"), "deliveries", "flow_enrollments",
                          ["enrollmentId"], ["id"], ondelete="CASCADE")
    # A campaign's row per (channel, contact); a flow's per (enrolment, step's channel).
    op.drop_constraint("uq_deliveries_channelId_contactId", "deliveries", type_="unique")
    op.create_index("uq_deliveries_channel_contact", "deliveries", ["channelId", "contactId"], unique=True,
                    postgresql_where=sa.text('"enrollmentId" IS NULL'))
    # A flow's campaign has a channel per step, several of a type maybe (campaigns keep one per type
    # by app.services.campaigns, under the campaign's row lock).
    op.drop_index("uq_campaign_channels_campaign_type", "campaign_channels")
    op.create_index("uq_deliveries_enrollment_channel", "deliveries", ["enrollmentId", "channelId"], unique=True,
                    postgresql_where=sa.text('"enrollmentId" IS NOT NULL'))


def downgrade():
    op.drop_index("uq_deliveries_enrollment_channel", "deliveries")
    op.drop_index("uq_deliveries_channel_contact", "deliveries")
    op.execute('DELETE FROM campaigns AS c USING flows AS f WHERE f."campaignId" = c.id')
    op.create_index("uq_campaign_channels_campaign_type", "campaign_channels", ["campaignId", "channelType"],
                    unique=True)
    op.execute('DELETE FROM deliveries WHERE "enrollmentId" IS NOT NULL')
    op.create_unique_constraint("uq_deliveries_channelId_contactId", "deliveries", ["channelId", "contactId"])
    op.drop_constraint(op.f("fk_deliveries_enrollmentId_flow_enrollments"), "deliveries", type_="foreignkey")
    op.drop_column("deliveries", "enrollmentId")
    op.drop_table("flow_enrollments")
    op.drop_table("flow_steps")
    op.drop_index("ix_flows_running", "flows")
    op.drop_index("ix_flows_userId_created", "flows")
    op.drop_table("flows")
