"""Suppressions: addresses a merchant must not send to, kept by hash beyond the contact.

Revision ID: 0015_suppressions
Revises: 0014_attribution
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_suppressions"
down_revision = "0014_attribution"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "suppressions",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("addressHash", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["userId"], ["users.id"], name=op.f("fk_suppressions_userId_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("userId", "kind", "addressHash", name=op.f("uq_suppressions_userId_kind_addressHash")),
    )
    op.create_index("ix_suppressions_user_created", "suppressions", ["userId", "createdAt", "id"])


def downgrade():
    op.drop_index("ix_suppressions_user_created", table_name="suppressions")
    op.drop_table("suppressions")
