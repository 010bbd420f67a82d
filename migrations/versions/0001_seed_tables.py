"""The nine seed tables, exactly as TypeORM creates them (shared contract: schema.sql).

Revision ID: 0001_seed_tables
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001_seed_tables"
down_revision = None
branch_labels = None
depends_on = None

UUID_PK = dict(server_default=sa.text("uuid_generate_v4()"), nullable=False)


def _id() -> sa.Column:
    return sa.Column("id", pg.UUID(), **UUID_PK)


def _created() -> sa.Column:
    return sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False)


def _updated() -> sa.Column:
    return sa.Column("updatedAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False)


def _fk(column: str, target: str, name: str, ondelete: str | None = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade():
    op.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public')

    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("passwordHash", sa.String(), nullable=False),
        sa.Column("firstName", sa.String(), nullable=True),
        sa.Column("lastName", sa.String(), nullable=True),
        sa.Column("companyName", sa.String(), nullable=True),
        sa.Column("isVerified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("lastLoginAt", sa.DateTime(), nullable=True),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_a3ffb1c0c8416b9fc6f907b7433"),
        sa.UniqueConstraint("email", name="UQ_97672ac88f789774dd47f7c8be3"),
    )
    op.create_table(
        "user_sessions",
        _id(),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("refreshTokenHash", sa.String(), nullable=False),
        sa.Column("accessTokenJti", sa.String(), nullable=True),
        sa.Column("expiresAt", sa.DateTime(), nullable=False),
        sa.Column("isRevoked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("ipAddress", sa.String(), nullable=True),
        sa.Column("userAgent", sa.String(), nullable=True),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_e93e031a5fed190d4789b6bfd83"),
        sa.UniqueConstraint("accessTokenJti", name="UQ_23ff1a10a966b209b3e9c7d5ca7"),
        _fk("userId", "users", "FK_55fa4db8406ed66bc7044328427"),
    )
    op.create_table(
        "token_blacklist",
        _id(),
        sa.Column("jti", sa.String(), nullable=False),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("expiresAt", sa.DateTime(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name="PK_3e37528d03f0bd5335874afa48d"),
        sa.UniqueConstraint("jti", name="UQ_73e5965ffdbd4a9f2de7c93043c"),
        _fk("userId", "users", "FK_cde27adb955c236798ccf3b9d5c"),
    )
    op.create_table(
        "data_sources",
        _id(),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("sourceType", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("config", pg.JSONB(), nullable=False),
        sa.Column("status", sa.String(), server_default="active", nullable=False),
        sa.Column("lastSyncAt", sa.DateTime(), nullable=True),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_dc70b1c6b641726739857fd938d"),
        _fk("userId", "users", "FK_d5f47731efcdc25badbca454ad2"),
    )
    op.create_table(
        "data_events",
        _id(),
        sa.Column("dataSourceId", pg.UUID(), nullable=False),
        sa.Column("eventType", sa.String(), nullable=False),
        sa.Column("eventData", pg.JSONB(), nullable=False),
        sa.Column("processedAt", sa.DateTime(), nullable=True),
        _created(),
        sa.PrimaryKeyConstraint("id", name="PK_cd59d7c7abb032ef628cb1640d0"),
        _fk("dataSourceId", "data_sources", "FK_17180d03a6492b47b8ac13ccc33"),
    )
    op.create_table(
        "conversations",
        _id(),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("status", sa.String(), server_default="active", nullable=False),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_ee34f4f7ced4ec8681f26bf04ef"),
        _fk("userId", "users", "FK_a9b3b5d51da1c75242055338b59"),
    )
    op.create_table(
        "messages",
        _id(),
        sa.Column("conversationId", pg.UUID(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", pg.JSONB(), nullable=True),
        _created(),
        sa.PrimaryKeyConstraint("id", name="PK_18325f38ae6de43878487eff986"),
        _fk("conversationId", "conversations", "FK_e5663ce0c730b2de83445e2fd19"),
    )
    op.create_table(
        "campaigns",
        _id(),
        sa.Column("userId", pg.UUID(), nullable=False),
        sa.Column("conversationId", pg.UUID(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(), server_default="draft", nullable=False),
        sa.Column("scheduledAt", sa.DateTime(), nullable=True),
        sa.Column("startedAt", sa.DateTime(), nullable=True),
        sa.Column("endedAt", sa.DateTime(), nullable=True),
        sa.Column("config", pg.JSONB(), nullable=False),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_831e3fcd4fc45b4e4c3f57a9ee4"),
        _fk("userId", "users", "FK_b6c738ef1561082d235dfc20b43"),
        # TypeORM's default for this relation: no ON DELETE rule.
        _fk("conversationId", "conversations", "FK_c444a1978bf4db13e7126155203", ondelete=None),
    )
    op.create_table(
        "campaign_channels",
        _id(),
        sa.Column("campaignId", pg.UUID(), nullable=False),
        sa.Column("channelType", sa.String(), nullable=False),
        sa.Column("config", pg.JSONB(), nullable=False),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        _counter("sentCount"),
        _counter("deliveredCount"),
        _counter("openedCount"),
        _counter("clickedCount"),
        _created(),
        _updated(),
        sa.PrimaryKeyConstraint("id", name="PK_27d3e75ca672ccee35f3336b7ab"),
        _fk("campaignId", "campaigns", "FK_98637961e31a0cdff15db429307"),
    )


def downgrade():
    for table in (
        "campaign_channels",
        "campaigns",
        "messages",
        "conversations",
        "data_events",
        "data_sources",
        "token_blacklist",
        "user_sessions",
        "users",
    ):
        op.drop_table(table)
