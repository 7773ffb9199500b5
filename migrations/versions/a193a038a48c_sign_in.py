"""sign-in: per-tenant session timeouts

Revision ID: a193a038a48c
Revises: 2c0d749e9352
Create Date: 2026-12-07 04:03:55.225269

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = 'a193a038a48c'
down_revision = '2c0d749e9352'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_idle_minutes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('session_max_hours', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('session_max_hours')
        batch_op.drop_column('session_idle_minutes')
