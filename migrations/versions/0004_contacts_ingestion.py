"""Contacts (identities, push subscriptions, activity) and ingestion state (ingest keys,
de-duplication keys, processing failures, sync runs).

Revision ID: 0004_contacts_ingestion
Revises: 0003_accounts
Create Date: 2026-11-26 00:59:10.173382

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0004_contacts_ingestion'
down_revision = '0003_accounts'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('contacts',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('userId', sa.UUID(), nullable=False),
    sa.Column('email', sa.String(), nullable=True),
    sa.Column('phone', sa.String(), nullable=True),
    sa.Column('firstName', sa.String(), nullable=True),
    sa.Column('lastName', sa.String(), nullable=True),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('externalIds', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('consent', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('consentSources', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('updatedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['userId'], ['users.id'], name=op.f('fk_contacts_userId_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_userId_createdAt', ['userId', 'createdAt'], unique=False)
        batch_op.create_index('uq_contacts_user_email', ['userId', sa.literal_column('lower(email)')], unique=True, postgresql_where=sa.text('email IS NOT NULL'))
        batch_op.create_index('uq_contacts_user_phone', ['userId', 'phone'], unique=True, postgresql_where=sa.text('phone IS NOT NULL'))

    op.create_table('contact_identities',
    sa.Column('userId', sa.UUID(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.Column('contactId', sa.UUID(), nullable=False),
    sa.ForeignKeyConstraint(['contactId'], ['contacts.id'], name=op.f('fk_contact_identities_contactId_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['userId'], ['users.id'], name=op.f('fk_contact_identities_userId_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('userId', 'kind', 'value', name=op.f('pk_contact_identities'))
    )
    with op.batch_alter_table('contact_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_identities_contactId'), ['contactId'], unique=False)

    op.create_table('contact_push_subscriptions',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('contactId', sa.UUID(), nullable=False),
    sa.Column('endpoint', sa.Text(), nullable=False),
    sa.Column('p256dh', sa.String(), nullable=False),
    sa.Column('auth', sa.String(), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['contactId'], ['contacts.id'], name=op.f('fk_contact_push_subscriptions_contactId_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_push_subscriptions')),
    sa.UniqueConstraint('endpoint', name=op.f('uq_contact_push_subscriptions_endpoint'))
    )
    with op.batch_alter_table('contact_push_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_push_subscriptions_contactId'), ['contactId'], unique=False)

    op.create_table('data_event_keys',
    sa.Column('dataSourceId', sa.UUID(), nullable=False),
    sa.Column('dedupeKey', sa.String(), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['dataSourceId'], ['data_sources.id'], name=op.f('fk_data_event_keys_dataSourceId_data_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataSourceId', 'dedupeKey', name=op.f('pk_data_event_keys'))
    )
    with op.batch_alter_table('data_event_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_event_keys_createdAt'), ['createdAt'], unique=False)

    op.create_table('data_source_ingest_keys',
    sa.Column('dataSourceId', sa.UUID(), nullable=False),
    sa.Column('keyHash', sa.String(), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['dataSourceId'], ['data_sources.id'], name=op.f('fk_data_source_ingest_keys_dataSourceId_data_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataSourceId', name=op.f('pk_data_source_ingest_keys'))
    )
    op.create_table('data_source_sync_runs',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('dataSourceId', sa.UUID(), nullable=False),
    sa.Column('trigger', sa.String(), nullable=False),
    sa.Column('status', sa.String(), server_default='running', nullable=False),
    sa.Column('startedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('leaseExpiresAt', sa.DateTime(), nullable=False),
    sa.Column('finishedAt', sa.DateTime(), nullable=True),
    sa.Column('eventsCreated', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.ForeignKeyConstraint(['dataSourceId'], ['data_sources.id'], name=op.f('fk_data_source_sync_runs_dataSourceId_data_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_source_sync_runs'))
    )
    with op.batch_alter_table('data_source_sync_runs', schema=None) as batch_op:
        batch_op.create_index('ix_data_source_sync_runs_source_started', ['dataSourceId', 'startedAt'], unique=False)
        batch_op.create_index('uq_data_source_sync_runs_running', ['dataSourceId'], unique=True, postgresql_where=sa.text("status = 'running'"))

    op.create_table('contact_activities',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('userId', sa.UUID(), nullable=False),
    sa.Column('contactId', sa.UUID(), nullable=False),
    sa.Column('dataEventId', sa.UUID(), nullable=True),
    sa.Column('eventType', sa.String(), nullable=False),
    sa.Column('originalName', sa.String(), nullable=False),
    sa.Column('occurredAt', sa.DateTime(), nullable=False),
    sa.Column('properties', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['contactId'], ['contacts.id'], name=op.f('fk_contact_activities_contactId_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_activities')),
    sa.UniqueConstraint('dataEventId', name=op.f('uq_contact_activities_dataEventId'))
    )
    with op.batch_alter_table('contact_activities', schema=None) as batch_op:
        batch_op.create_index('ix_contact_activities_contact_type_time', ['contactId', 'eventType', 'occurredAt'], unique=False)
        batch_op.create_index('ix_contact_activities_user_type_time', ['userId', 'eventType', 'occurredAt'], unique=False)

    op.create_table('data_event_failures',
    sa.Column('dataEventId', sa.UUID(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('lastError', sa.Text(), nullable=False),
    sa.Column('quarantinedAt', sa.DateTime(), nullable=True),
    sa.Column('updatedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['dataEventId'], ['data_events.id'], name=op.f('fk_data_event_failures_dataEventId_data_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataEventId', name=op.f('pk_data_event_failures'))
    )
    with op.batch_alter_table('data_events', schema=None) as batch_op:
        batch_op.create_index('ix_data_events_pending', ['createdAt'], unique=False, postgresql_where=sa.text('"processedAt" IS NULL'))
        batch_op.create_index('ix_data_events_source_created', ['dataSourceId', 'createdAt'], unique=False)

    with op.batch_alter_table('data_sources', schema=None) as batch_op:
        batch_op.create_index('ix_data_sources_userId', ['userId'], unique=False)



def downgrade():
    with op.batch_alter_table('data_sources', schema=None) as batch_op:
        batch_op.drop_index('ix_data_sources_userId')

    with op.batch_alter_table('data_events', schema=None) as batch_op:
        batch_op.drop_index('ix_data_events_source_created')
        batch_op.drop_index('ix_data_events_pending', postgresql_where=sa.text('"processedAt" IS NULL'))

    op.drop_table('data_event_failures')
    with op.batch_alter_table('contact_activities', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_activities_user_type_time')
        batch_op.drop_index('ix_contact_activities_contact_type_time')

    op.drop_table('contact_activities')
    with op.batch_alter_table('data_source_sync_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_data_source_sync_runs_running', postgresql_where=sa.text("status = 'running'"))
        batch_op.drop_index('ix_data_source_sync_runs_source_started')

    op.drop_table('data_source_sync_runs')
    op.drop_table('data_source_ingest_keys')
    with op.batch_alter_table('data_event_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_event_keys_createdAt'))

    op.drop_table('data_event_keys')
    with op.batch_alter_table('contact_push_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_push_subscriptions_contactId'))

    op.drop_table('contact_push_subscriptions')
    with op.batch_alter_table('contact_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_identities_contactId'))

    op.drop_table('contact_identities')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('uq_contacts_user_phone', postgresql_where=sa.text('phone IS NOT NULL'))
        batch_op.drop_index('uq_contacts_user_email', postgresql_where=sa.text('email IS NOT NULL'))
        batch_op.drop_index('ix_contacts_userId_createdAt')

    op.drop_table('contacts')
