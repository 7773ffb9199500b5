"""single sign-on: a tenant's OpenID Connect provider, people's links to it, how a session signed in

Revision ID: c2f3daa225f4
Revises: cd0420d85ddf
Create Date: 2026-12-07 07:22:58.069345

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = 'c2f3daa225f4'
down_revision = 'cd0420d85ddf'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('single_sign_on_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_sign_in_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_single_sign_on_links_tenant_id_tenants')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_single_sign_on_links_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_single_sign_on_links')),
    sa.UniqueConstraint('tenant_id', 'user_id', name=op.f('uq_single_sign_on_links_tenant_id_user_id'))
    )
    with op.batch_alter_table('single_sign_on_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_single_sign_on_links_user_id'), ['user_id'], unique=False)

    op.create_table('tenant_single_sign_on',
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('client_secret_encrypted', sa.String(length=1000), nullable=True),
    sa.Column('allowed_domains', sa.JSON(), nullable=False),
    sa.Column('jit_enabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('jit_role', sa.String(length=20), server_default='requester', nullable=False),
    sa.Column('password_sign_in_off', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('updated_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_tenant_single_sign_on_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_tenant_single_sign_on'))
    )
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sign_in_method', sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table('user_sessions', schema=None) as batch_op:
        batch_op.drop_column('sign_in_method')

    op.drop_table('tenant_single_sign_on')
    with op.batch_alter_table('single_sign_on_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_single_sign_on_links_user_id'))

    op.drop_table('single_sign_on_links')
