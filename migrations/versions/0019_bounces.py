"""Bounces and complaints: one event per delivery and kind, tallies per campaign channel, soft-bounce
streaks per contact, and received bounce mail that changed nothing.

Revision ID: 0019_bounces
Revises: 0018_account_deletions
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019_bounces"
down_revision = "0018_account_deletions"
branch_labels = None
depends_on = None


def upgrade():
    now = sa.text("now()")
    zero = sa.text("0")
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("deliveryId", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["deliveryId"], ["deliveries.id"], name="fk_bounce_events_deliveryId_deliveries",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_events"),
        sa.UniqueConstraint("deliveryId", "kind", name="uq_bounce_events_deliveryId_kind"),
    )
    op.create_table(
        "bounce_counts",
        sa.Column("channelId", sa.UUID(), nullable=False),
        sa.Column("bouncedCount", sa.Integer(), server_default=zero, nullable=False),
        sa.Column("softBouncedCount", sa.Integer(), server_default=zero, nullable=False),
        sa.Column("complainedCount", sa.Integer(), server_default=zero, nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["channelId"], ["campaign_channels.id"],
                                name="fk_bounce_counts_channelId_campaign_channels", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channelId", name="pk_bounce_counts"),
    )
    op.create_table(
        "bounce_streaks",
        sa.Column("contactId", sa.UUID(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("softBounces", sa.Integer(), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["contactId"], ["contacts.id"], name="fk_bounce_streaks_contactId_contacts",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contactId", name="pk_bounce_streaks"),
    )
    op.create_table(
        "bounce_mail",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("mailFrom", sa.String(), nullable=False),
        sa.Column("recipients", postgresql.ARRAY(sa.String()), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("receivedAt", sa.DateTime(), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bounce_mail"),
    )
    op.create_index("ix_bounce_mail_receivedAt", "bounce_mail", ["receivedAt"])


def downgrade():
    op.drop_table("bounce_mail")
    op.drop_table("bounce_streaks")
    op.drop_table("bounce_counts")
    op.drop_table("bounce_events")
