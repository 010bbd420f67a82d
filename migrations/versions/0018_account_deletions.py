"""Account deletions: merchants whose data a worker is deleting, batch by batch.

Revision ID: 0018_account_deletions
Revises: 0017_consent_history
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0018_account_deletions"
down_revision = "0017_consent_history"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "account_deletions",
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("requestedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_account_deletions_userId_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("userId", name=op.f("pk_account_deletions")),
    )


def downgrade():
    op.drop_table("account_deletions")
