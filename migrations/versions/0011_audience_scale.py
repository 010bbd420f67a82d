"""Big merchants: the merchant's activity of one type in a time range is read from the index alone
(it carries the contact), so an event condition is one index-only range scan joined by hash instead
of a probe per contact; and the reaper, which runs every few seconds, reads only rows in `sending`.

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


def upgrade():
    op.drop_index("ix_contact_activities_user_type_time", table_name="contact_activities")
    op.create_index("ix_contact_activities_user_type_time", "contact_activities", ["userId", "eventType", "occurredAt"],
                    postgresql_include=["contactId"])
    op.create_index("ix_deliveries_sending_lease", "deliveries", ["leaseExpiresAt"],
                    postgresql_where=sa.text("status = 'sending'"))


def downgrade():
    op.drop_index("ix_deliveries_sending_lease", table_name="deliveries")
    op.drop_index("ix_contact_activities_user_type_time", table_name="contact_activities")
    op.create_index("ix_contact_activities_user_type_time", "contact_activities", ["userId", "eventType", "occurredAt"])
