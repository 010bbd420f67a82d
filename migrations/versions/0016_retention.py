"""Retention: processed raw events are found by age without reading the pending ones.

Revision ID: 0016_retention
Revises: 0015_suppressions
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0016_retention"
down_revision = "0015_suppressions"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_data_events_processed", "data_events", ["processedAt"],
                    postgresql_where=sa.text('"processedAt" IS NOT NULL'))


def downgrade():
    op.drop_index("ix_data_events_processed", table_name="data_events")
