"""Merchant settings: default timezone, quiet hours and frequency caps per channel, UTM defaults and
attribution windows (one row per merchant, created when they first change a default); and each
contact's own timezone where the merchant gave one.

Revision ID: 0012_merchant_settings
Revises: 0011_audience_scale
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_merchant_settings"
down_revision = "0011_audience_scale"
branch_labels = None
depends_on = None


def upgrade():
    empty = sa.text("'{}'::jsonb")
    op.create_table(
        "merchant_settings",
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("timezone", sa.String(), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("quietHours", postgresql.JSONB(astext_type=sa.Text()), server_default=empty, nullable=False),
        sa.Column("frequencyCaps", postgresql.JSONB(astext_type=sa.Text()), server_default=empty, nullable=False),
        sa.Column("utm", postgresql.JSONB(astext_type=sa.Text()), server_default=empty, nullable=False),
        sa.Column("attribution", postgresql.JSONB(astext_type=sa.Text()), server_default=empty, nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_merchant_settings_userId_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_merchant_settings")),
    )


    op.create_table(
        "contact_timezones",
        sa.Column("contactId", sa.UUID(), nullable=False),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["contactId"], ["contacts.id"], name=op.f("fk_contact_timezones_contactId_contacts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contactId", name=op.f("pk_contact_timezones")),
    )


def downgrade():
    op.drop_table("contact_timezones")
    op.drop_table("merchant_settings")
