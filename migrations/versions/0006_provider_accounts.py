"""Merchants' provider accounts for SMS, WhatsApp and web push (secrets encrypted in config).

Revision ID: 0006_provider_accounts
Revises: 0005_campaigns
Create Date: 2026-11-26 01:53:13.753713

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0006_provider_accounts'
down_revision = '0005_campaigns'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('provider_accounts',
    sa.Column('id', sa.UUID(), server_default=sa.text('uuid_generate_v4()'), nullable=False),
    sa.Column('userId', sa.UUID(), nullable=False),
    sa.Column('channelType', sa.String(), nullable=False),
    sa.Column('accountRef', sa.String(), nullable=True),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('createdAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.Column('updatedAt', sa.DateTime(), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['userId'], ['users.id'], name=op.f('fk_provider_accounts_userId_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_accounts')),
    sa.UniqueConstraint('userId', 'channelType', name=op.f('uq_provider_accounts_userId_channelType'))
    )
    with op.batch_alter_table('provider_accounts', schema=None) as batch_op:
        batch_op.create_index('ix_provider_accounts_account_ref', ['channelType', 'accountRef'], unique=False)



def downgrade():
    with op.batch_alter_table('provider_accounts', schema=None) as batch_op:
        batch_op.drop_index('ix_provider_accounts_account_ref')

    op.drop_table('provider_accounts')
