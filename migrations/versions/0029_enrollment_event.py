"""Flow enrolments no longer copy their triggering event's properties (`context`): a step's
templates read them from the event's own activity row, found by `dataEventId`. An enrolment row is
written for every entry, hundreds a batch; the copy made each one about twice the size.

Revision ID: 0029_enrollment_event
Revises: 0028_bulk_row_ids
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0029_enrollment_event"
down_revision = "0028_bulk_row_ids"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_column("flow_enrollments", "context")


def downgrade():
    op.add_column("flow_enrollments", sa.Column("context", pg.JSONB(), nullable=False,
                                                server_default=sa.text("'{}'::jsonb")))
    op.execute('UPDATE flow_enrollments AS e SET context = a.properties FROM contact_activities AS a '
               'WHERE a."dataEventId" = e."dataEventId"')
