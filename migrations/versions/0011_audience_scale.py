"""Big merchants: the merchant's activity of one type in a time range is read from the index alone
(it carries the contact), so an event condition is one index-only range scan joined by hash instead
of a probe per contact; a launch writes its ledger in chunks, in ranges of the merchant's contacts by
id, recording its progress (ledger_preparations); and the reaper, which runs every few seconds,
reads only rows in `sending`. Statistics on each channel's consent value let the planner see how
many contacts an audience's consent condition keeps (without them it guesses 0.5 % and probes the
activity of every contact one by one), and on the lower-cased email so a search by address is
known to find one contact and reads the unique index.

Revision ID: 0011_audience_scale
Revises: 0010_send_engine
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_audience_scale"
down_revision = "0010_send_engine"
branch_labels = None
depends_on = None
CONSENT_CHANNELS = ("email", "sms", "push", "whatsapp")  # the channels at this revision


def upgrade():
    op.drop_index("ix_contact_activities_user_type_time", table_name="contact_activities")
    op.create_index("ix_contact_activities_user_type_time", "contact_activities", ["userId", "eventType", "occurredAt"],
                    postgresql_include=["contactId"])
    op.create_index("ix_deliveries_sending_lease", "deliveries", ["leaseExpiresAt"],
                    postgresql_where=sa.text("status = 'sending'"))
    op.create_index("ix_contacts_userId_id", "contacts", ["userId", "id"])
    op.create_index("ix_deliveries_campaign_created", "deliveries", ["campaignId", "createdAt", "id"])
    for channel in CONSENT_CHANNELS:
        op.execute(f"CREATE STATISTICS st_contacts_consent_{channel} ON ((consent ->> '{channel}')) FROM contacts")
    op.execute("CREATE STATISTICS st_contacts_email_lower ON (lower(email)) FROM contacts")
    op.create_table(
        "ledger_preparations",
        sa.Column("campaignId", sa.UUID(), nullable=False),
        sa.Column("afterContactId", sa.UUID(), nullable=True),
        sa.Column("rowsWritten", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("members", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("startedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("finishedAt", sa.DateTime(), nullable=True),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["campaignId"], ["campaigns.id"], name=op.f("fk_ledger_preparations_campaignId_campaigns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaignId", name=op.f("pk_ledger_preparations")),
    )


def downgrade():
    op.execute("DROP STATISTICS st_contacts_email_lower")
    for channel in CONSENT_CHANNELS:
        op.execute(f"DROP STATISTICS st_contacts_consent_{channel}")
    op.drop_table("ledger_preparations")
    op.drop_index("ix_deliveries_campaign_created", table_name="deliveries")
    op.drop_index("ix_contacts_userId_id", table_name="contacts")
    op.drop_index("ix_deliveries_sending_lease", table_name="deliveries")
    op.drop_index("ix_contact_activities_user_type_time", table_name="contact_activities")
    op.create_index("ix_contact_activities_user_type_time", "contact_activities", ["userId", "eventType", "occurredAt"])
