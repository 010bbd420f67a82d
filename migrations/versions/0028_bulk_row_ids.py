"""The tables written hundreds of rows a statement (contact activity, the delivery ledger) take their
ids from PostgreSQL's gen_random_uuid(): uuid-ossp's uuid_generate_v4() makes system calls for
every id. Flow enrolments did so in 0027.

Revision ID: 0028_bulk_row_ids
Revises: 0027_enrollment_references
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0028_bulk_row_ids"
down_revision = "0027_enrollment_references"
branch_labels = None
depends_on = None

TABLES = ("contact_activities", "deliveries")


def upgrade():
    for table in TABLES:
        op.alter_column(table, "id", server_default=sa.text("gen_random_uuid()"))


def downgrade():
    for table in TABLES:
        op.alter_column(table, "id", server_default=sa.text("uuid_generate_v4()"))
