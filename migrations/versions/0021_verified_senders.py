"""Verified senders: the addresses (confirmed by a mailed link) and domains (by their DNS records,
with Herald's own DKIM key) a merchant may send email from.

Revision ID: 0021_verified_senders
Revises: 0024_webhooks
Create Date: 2026-12-19
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0021_verified_senders"
down_revision = "0024_webhooks"
branch_labels = None
depends_on = None


def upgrade():
    now = sa.text("now()")
    op.create_table(
        "senders",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("domain", sa.String(), nullable=True),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        sa.Column("verifiedAt", sa.DateTime(), nullable=True),
        sa.Column("confirmationRequestedAt", sa.DateTime(), nullable=True),
        sa.Column("tokenHash", sa.String(), nullable=True),
        sa.Column("tokenExpiresAt", sa.DateTime(), nullable=True),
        sa.Column("confirmationSentAt", sa.DateTime(), nullable=True),
        sa.Column("dkimSelector", sa.String(), nullable=True),
        sa.Column("dkimPublicKey", sa.Text(), nullable=True),
        sa.Column("dkimPrivateKey", sa.Text(), nullable=True),
        sa.Column("checkedAt", sa.DateTime(), nullable=True),
        sa.Column("checkResults", pg.JSONB(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=now, nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=now, nullable=False),
        sa.CheckConstraint("(kind = 'address') = (email IS NOT NULL) AND (kind = 'domain') = (domain IS NOT NULL)",
                           name="ck_senders_one_identity"),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name="fk_senders_userId_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_senders"),
        sa.UniqueConstraint("tokenHash", name="uq_senders_tokenHash"),
    )
    op.create_index("uq_senders_userId_email", "senders", ["userId", "email"], unique=True,
                    postgresql_where=sa.text("email IS NOT NULL"))
    op.create_index("uq_senders_userId_domain", "senders", ["userId", "domain"], unique=True,
                    postgresql_where=sa.text("domain IS NOT NULL"))
    op.create_index("ix_senders_user_created", "senders", ["userId", "createdAt", "id"])


def downgrade():
    op.drop_table("senders")
