"""tenants: the largest amount one item may carry

Revision ID: 5820830007aa
Revises: a619667711c8
Create Date: 2026-12-07 00:28:40.150760

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = '5820830007aa'
down_revision = 'a619667711c8'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_item_amount', app.types.Money(precision=18, scale=2), nullable=True))


def downgrade():
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('max_item_amount')
