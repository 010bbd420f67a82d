"""Flow enrolments: the `once` key is unique only where it is set. `always` and `afterDays`
enrolments (onceKey NULL, most of them) no longer write an index entry for it, nor have it checked
on insert.

Revision ID: 0026_once_key_partial
Revises: 0021_verified_senders
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0026_once_key_partial"
down_revision = "0021_verified_senders"
branch_labels = None
depends_on = None

_WHERE = sa.text('"onceKey" IS NOT NULL')


def upgrade():
    op.create_index("uq_flow_enrollments_once", "flow_enrollments", ["flowId", "onceKey"], unique=True,
                    postgresql_where=_WHERE)
    op.drop_constraint("uq_flow_enrollments_flowId_onceKey", "flow_enrollments", type_="unique")


def downgrade():
    op.create_unique_constraint("uq_flow_enrollments_flowId_onceKey", "flow_enrollments", ["flowId", "onceKey"])
    op.drop_index("uq_flow_enrollments_once", table_name="flow_enrollments")
