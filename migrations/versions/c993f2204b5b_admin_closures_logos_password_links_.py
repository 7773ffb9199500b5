"""admin: closures, logos, password links, four-eyes changes, delegation scope

Revision ID: c993f2204b5b
Revises: e83807d0dab7
Create Date: 2026-11-27 14:38:43.371333

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = 'c993f2204b5b'
down_revision = 'e83807d0dab7'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('password_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=True),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', app.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_password_links_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_password_links_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_links')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_password_links_token_hash'))
    )
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.create_index('ix_password_links_user_open', ['user_id', 'used_at', 'revoked_at'], unique=False)

    op.create_table('pending_membership_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', app.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_pending_membership_changes_decided_by_id_users')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], name=op.f('fk_pending_membership_changes_requested_by_id_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_pending_membership_changes_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pending_membership_changes_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_membership_changes'))
    )
    with op.batch_alter_table('pending_membership_changes', schema=None) as batch_op:
        batch_op.create_index('ix_pending_membership_changes_tenant_state', ['tenant_id', 'state'], unique=False)

    op.create_table('tenant_closures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('first_day', sa.Date(), nullable=False),
    sa.Column('last_day', sa.Date(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_closures_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_closures'))
    )
    with op.batch_alter_table('tenant_closures', schema=None) as batch_op:
        batch_op.create_index('ix_tenant_closures_tenant_first', ['tenant_id', 'first_day'], unique=False)

    op.create_table('tenant_logos',
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('updated_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_logos_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_logos'))
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delegate_kinds', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('delegate_max_amount', app.types.Money(precision=18, scale=2), nullable=True))

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('logo_version', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('calendar_revision', sa.String(length=16), nullable=True))



def downgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('calendar_revision')
        batch_op.drop_column('logo_version')

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('delegate_max_amount')
        batch_op.drop_column('delegate_kinds')

    op.drop_table('tenant_logos')
    with op.batch_alter_table('tenant_closures', schema=None) as batch_op:
        batch_op.drop_index('ix_tenant_closures_tenant_first')

    op.drop_table('tenant_closures')
    with op.batch_alter_table('pending_membership_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_membership_changes_tenant_state')

    op.drop_table('pending_membership_changes')
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.drop_index('ix_password_links_user_open')

    op.drop_table('password_links')
