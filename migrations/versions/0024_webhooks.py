"""Outgoing webhooks: the merchant's endpoints, the outbox of events, and their deliveries.

Revision ID: 0024_webhooks
Revises: 0025_flows
Create Date: 2026-12-19
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0024_webhooks"
down_revision = "0025_flows"
branch_labels = None
depends_on = None


def upgrade():
    now = sa.text("now()")
    zero = sa.text("0")
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("eventTypes", pg.ARRAY(sa.String()), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabledAt", sa.DateTime(), nullable=True),
        sa.Column("disabledReason", sa.Text(), nullable=True),
        sa.Column("failingSince", sa.DateTime(), nullable=True),
        sa.Column("consecutiveFailures", sa.Integer(), server_default=zero, nullable=False),
        sa.Column("createdAt", sa.DateTime(), server_default=now, nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name="fk_webhook_endpoints_userId_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_index("ix_webhook_endpoints_userId", "webhook_endpoints", ["userId"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("data", pg.JSONB(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name="fk_webhook_events_userId_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
    )
    op.create_index("ix_webhook_events_userId", "webhook_events", ["userId"])
    op.create_index("ix_webhook_events_createdAt", "webhook_events", ["createdAt"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("eventId", sa.UUID(), nullable=False),
        sa.Column("endpointId", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=zero, nullable=False),
        sa.Column("nextAttemptAt", sa.DateTime(), server_default=now, nullable=False),
        sa.Column("leaseExpiresAt", sa.DateTime(), nullable=True),
        sa.Column("firstAttemptAt", sa.DateTime(), nullable=True),
        sa.Column("lastAttemptAt", sa.DateTime(), nullable=True),
        sa.Column("responseStatus", sa.SmallInteger(), nullable=True),
        sa.Column("responseBody", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("durationMs", sa.Integer(), nullable=True),
        sa.Column("deliveredAt", sa.DateTime(), nullable=True),
        sa.Column("replayOf", sa.UUID(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["eventId"], ["webhook_events.id"], name="fk_webhook_deliveries_eventId_webhook_events",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["endpointId"], ["webhook_endpoints.id"],
                                name="fk_webhook_deliveries_endpointId_webhook_endpoints", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["replayOf"], ["webhook_deliveries.id"],
                                name="fk_webhook_deliveries_replayOf_webhook_deliveries", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["nextAttemptAt"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_webhook_deliveries_endpoint_created", "webhook_deliveries", ["endpointId", "createdAt", "id"])
    op.create_index("ix_webhook_deliveries_eventId", "webhook_deliveries", ["eventId"])


def downgrade():
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
