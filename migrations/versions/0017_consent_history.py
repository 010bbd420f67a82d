"""Consent history: every change of a contact's consent, from every path that writes it.

A trigger on `contacts` records each channel whose consent a statement changed (or set, for a new
contact), with the source the row now names for it and what the writing transaction declared
(`herald.consent_via`, and for a person's own action `herald.consent_ip` / `herald.consent_user_agent`:
app.services.consent.declare). Bulk writes (imports, event processing) are covered like single ones.

Revision ID: 0017_consent_history
Revises: 0016_retention
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_consent_history"
down_revision = "0016_retention"
branch_labels = None
depends_on = None

RECORD = """
CREATE FUNCTION record_consent_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO consent_changes ("userId", "contactId", channel, value, source, via, ip, "userAgent")
    SELECT NEW."userId", NEW.id, changed.key, changed.value #>> '{}', NEW."consentSources" ->> changed.key,
           nullif(current_setting('herald.consent_via', true), ''),
           nullif(current_setting('herald.consent_ip', true), ''),
           nullif(current_setting('herald.consent_user_agent', true), '')
    FROM jsonb_each(NEW.consent) AS changed
    WHERE TG_OP = 'INSERT' OR (OLD.consent -> changed.key) IS DISTINCT FROM changed.value;
    RETURN NULL;
END $$
"""


def upgrade():
    op.create_table(
        "consent_changes",
        sa.Column("id", sa.UUID(), server_default=sa.text("uuid_generate_v4()"), nullable=False),
        sa.Column("userId", sa.UUID(), nullable=False),
        sa.Column("contactId", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("via", sa.String(), nullable=True),
        sa.Column("ip", sa.String(), nullable=True),
        sa.Column("userAgent", sa.String(), nullable=True),
        sa.Column("createdAt", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["contactId"], ["contacts.id"], name=op.f("fk_consent_changes_contactId_contacts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_changes")),
    )
    op.create_index("ix_consent_changes_contact_created", "consent_changes", ["contactId", "createdAt"])
    op.execute(RECORD)
    op.execute("CREATE TRIGGER contacts_consent_inserted AFTER INSERT ON contacts "
               "FOR EACH ROW EXECUTE FUNCTION record_consent_changes()")
    op.execute("CREATE TRIGGER contacts_consent_updated AFTER UPDATE OF consent ON contacts "
               "FOR EACH ROW WHEN (OLD.consent IS DISTINCT FROM NEW.consent) EXECUTE FUNCTION record_consent_changes()")


def downgrade():
    op.execute("DROP TRIGGER contacts_consent_updated ON contacts")
    op.execute("DROP TRIGGER contacts_consent_inserted ON contacts")
    op.execute("DROP FUNCTION record_consent_changes()")
    op.drop_index("ix_consent_changes_contact_created", table_name="consent_changes")
    op.drop_table("consent_changes")
