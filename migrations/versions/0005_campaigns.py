"""Campaigns: audiences, the delivery ledger and tracked message links.

Revision ID: 0005_campaigns
Revises: 0004_contacts_ingestion
Create Date: 2026-11-26 01:14:55.509917

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0005_campaigns'
down_revision = '0004_contacts_ingestion'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audiences',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('campaignId', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('lastSize', sa.Integer(), nullable=True),
    sa.Column('lastComputedAt', sa.DateTime(), nullable=True),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('updatedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['campaignId'], ['campaigns.id'], name=op.f('fk_audiences_campaignId_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audiences'))
    )
    with op.batch_alter_table('audiences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audiences_campaignId'), ['campaignId'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('campaignId', sa.UUID(), nullable=False),
    sa.Column('channelId', sa.UUID(), nullable=False),
    sa.Column('contactId', sa.UUID(), nullable=True),
    sa.Column('channelType', sa.String(), nullable=False),
    sa.Column('address', sa.String(), nullable=True),
    sa.Column('status', sa.String(), server_default='queued', nullable=False),
    sa.Column('skipReason', sa.String(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('providerMessageId', sa.String(), nullable=True),
    sa.Column('leaseExpiresAt', sa.DateTime(), nullable=True),
    sa.Column('sentAt', sa.DateTime(), nullable=True),
    sa.Column('deliveredAt', sa.DateTime(), nullable=True),
    sa.Column('openedAt', sa.DateTime(), nullable=True),
    sa.Column('clickedAt', sa.DateTime(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('updatedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['campaignId'], ['campaigns.id'], name=op.f('fk_deliveries_campaignId_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['channelId'], ['campaign_channels.id'], name=op.f('fk_deliveries_channelId_campaign_channels'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contactId'], ['contacts.id'], name=op.f('fk_deliveries_contactId_contacts'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('channelId', 'contactId', name=op.f('uq_deliveries_channelId_contactId'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_campaign_status', ['campaignId', 'status'], unique=False)
        batch_op.create_index('ix_deliveries_channel_status', ['channelId', 'status'], unique=False)
        batch_op.create_index('ix_deliveries_provider_message', ['providerMessageId'], unique=False, postgresql_where=sa.text('"providerMessageId" IS NOT NULL'))

    op.create_table('message_links',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('channelId', sa.UUID(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['channelId'], ['campaign_channels.id'], name=op.f('fk_message_links_channelId_campaign_channels'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_links')),
    sa.UniqueConstraint('channelId', 'url', name=op.f('uq_message_links_channelId_url'))
    )
    with op.batch_alter_table('campaign_channels', schema=None) as batch_op:
        batch_op.create_index('ix_campaign_channels_campaignId', ['campaignId'], unique=False)
        batch_op.create_index('uq_campaign_channels_campaign_type', ['campaignId', 'channelType'], unique=True)

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_index('ix_campaigns_due', ['scheduledAt'], unique=False, postgresql_where=sa.text("status = 'scheduled'"))
        batch_op.create_index('ix_campaigns_userId', ['userId'], unique=False)



def downgrade():
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_index('ix_campaigns_userId')
        batch_op.drop_index('ix_campaigns_due', postgresql_where=sa.text("status = 'scheduled'"))

    with op.batch_alter_table('campaign_channels', schema=None) as batch_op:
        batch_op.drop_index('uq_campaign_channels_campaign_type')
        batch_op.drop_index('ix_campaign_channels_campaignId')

    op.drop_table('message_links')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_provider_message', postgresql_where=sa.text('"providerMessageId" IS NOT NULL'))
        batch_op.drop_index('ix_deliveries_channel_status')
        batch_op.drop_index('ix_deliveries_campaign_status')

    op.drop_table('deliveries')
    with op.batch_alter_table('audiences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audiences_campaignId'))

    op.drop_table('audiences')
