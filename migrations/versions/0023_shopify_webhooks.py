"""Shopify webhook subscriptions Herald registers itself (one registration per Shopify source, and
the subscriptions left to remove when a source is deleted or its shop changes); GTM configs move to
the container id merchants see (`containerId` GTM-XXXXXXX), the API's numeric id becoming
`apiContainerId`.

Revision ID: 0023_shopify_webhooks
Revises: 0020_api_keys
Create Date: 2026-12-20
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0023_shopify_webhooks"
down_revision = "0020_api_keys"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "shopify_webhook_registrations",
        sa.Column("dataSourceId", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        sa.Column("generation", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("callbackUrl", sa.String(), nullable=True),
        sa.Column("subscriptions", pg.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lastError", sa.Text(), nullable=True),
        sa.Column("claim", sa.String(), nullable=True),
        sa.Column("leaseExpiresAt", sa.DateTime(), nullable=True),
        sa.Column("requestedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("registeredAt", sa.DateTime(), nullable=True),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["dataSourceId"], ["data_sources.id"],
                                name=op.f("fk_shopify_webhook_registrations_dataSourceId_data_sources"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataSourceId", name=op.f("pk_shopify_webhook_registrations")),
    )
    op.create_index("ix_shopify_webhook_registrations_status", "shopify_webhook_registrations", ["status"])
    op.create_table(
        "shopify_webhook_removals",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        # No foreign key: the source is usually gone by the time its subscriptions are removed.
        sa.Column("dataSourceId", sa.UUID(), nullable=False),
        sa.Column("shopDomain", sa.String(), nullable=False),
        sa.Column("apiVersion", sa.String(), nullable=False),
        sa.Column("accessToken", sa.String(), nullable=False),
        sa.Column("subscriptionIds", pg.JSONB(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lastError", sa.Text(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shopify_webhook_removals")),
    )
    op.create_index("ix_shopify_webhook_removals_dataSourceId", "shopify_webhook_removals", ["dataSourceId"])
    # A numeric containerId was the API's id: it keeps its value as apiContainerId, and the source
    # asks its merchant for the GTM-XXXXXXX id on its next config change.
    op.execute("""
        UPDATE data_sources
        SET config = (config - 'containerId') || jsonb_build_object('apiContainerId', config->>'containerId')
        WHERE "sourceType" = 'gtm' AND config->>'containerId' ~ '^[0-9]+$'
    """)


def downgrade():
    op.execute("""
        UPDATE data_sources
        SET config = (config - 'apiContainerId') || jsonb_build_object('containerId', config->>'apiContainerId')
        WHERE "sourceType" = 'gtm' AND config ? 'apiContainerId'
    """)
    op.drop_table("shopify_webhook_removals")
    op.drop_table("shopify_webhook_registrations")
