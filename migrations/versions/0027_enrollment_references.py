"""Flow enrolments: no foreign keys, no (flow, event) key, ids from gen_random_uuid().

Enrolment inserts hundreds of rows per processed batch, and a foreign key checks each row with a
query of its own. What the keys guaranteed is kept by other means:
- on insert, the contact: an enrolment's contact is the contact of an activity row written in the
  same transaction, whose own key check has locked the contact; the flow: event processing reads
  the running flows `FOR KEY SHARE` (app.services.flows), as a key check would, once per batch;
- on delete, two statement triggers do what the keys' actions did: a deleted flow's enrolments are
  deleted (with their ledger rows, by deliveries' own key), a deleted contact's enrolments lose it.
The (flow, event) unique key goes: an event enrols only through the activity row its processing
writes, unique per event (app.services.event_processing), so the key only cost an index entry per
enrolment. And uuid-ossp's uuid_generate_v4() makes system calls for every id; PostgreSQL's own
gen_random_uuid() does not.

Revision ID: 0027_enrollment_references
Revises: 0026_once_key_partial
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0027_enrollment_references"
down_revision = "0026_once_key_partial"
branch_labels = None
depends_on = None

FUNCTIONS = """
CREATE FUNCTION delete_flows_enrollments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM flow_enrollments WHERE "flowId" IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE FUNCTION forget_contacts_enrollments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE flow_enrollments SET "contactId" = NULL WHERE "contactId" IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
"""


def upgrade():
    op.drop_constraint("uq_flow_enrollments_flowId_dataEventId", "flow_enrollments", type_="unique")
    op.alter_column("flow_enrollments", "id", server_default=sa.text("gen_random_uuid()"))
    op.drop_constraint("fk_flow_enrollments_flowId_flows", "flow_enrollments", type_="foreignkey")
    op.drop_constraint("fk_flow_enrollments_contactId_contacts", "flow_enrollments", type_="foreignkey")
    op.execute(FUNCTIONS)
    op.execute("CREATE TRIGGER flows_deleted_enrollments AFTER DELETE ON flows REFERENCING OLD TABLE AS gone "
               "FOR EACH STATEMENT EXECUTE FUNCTION delete_flows_enrollments()")
    op.execute("CREATE TRIGGER contacts_deleted_enrollments AFTER DELETE ON contacts REFERENCING OLD TABLE AS gone "
               "FOR EACH STATEMENT EXECUTE FUNCTION forget_contacts_enrollments()")


def downgrade():
    op.alter_column("flow_enrollments", "id", server_default=sa.text("uuid_generate_v4()"))
    op.create_unique_constraint(op.f("uq_flow_enrollments_flowId_dataEventId"), "flow_enrollments",
                                ["flowId", "dataEventId"])
    op.execute("DROP TRIGGER contacts_deleted_enrollments ON contacts")
    op.execute("DROP TRIGGER flows_deleted_enrollments ON flows")
    op.execute("DROP FUNCTION forget_contacts_enrollments()")
    op.execute("DROP FUNCTION delete_flows_enrollments()")
    op.execute('DELETE FROM flow_enrollments AS e WHERE NOT EXISTS (SELECT 1 FROM flows AS f WHERE f.id = e."flowId")')
    op.execute('UPDATE flow_enrollments AS e SET "contactId" = NULL '
               'WHERE NOT EXISTS (SELECT 1 FROM contacts AS c WHERE c.id = e."contactId")')
    op.create_foreign_key(op.f("fk_flow_enrollments_flowId_flows"), "flow_enrollments", "flows",
                          ["flowId"], ["id"], ondelete="CASCADE")
    op.create_foreign_key(op.f("fk_flow_enrollments_contactId_contacts"), "flow_enrollments", "contacts",
                          ["contactId"], ["id"], ondelete="SET NULL")
