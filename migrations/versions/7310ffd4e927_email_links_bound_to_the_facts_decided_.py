"""email links: bound to the facts decided on, not the item version

Revision ID: 7310ffd4e927
Revises: 5820830007aa
Create Date: 2026-12-07 01:23:31.385339

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = '7310ffd4e927'
down_revision = '5820830007aa'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('approval_link_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('facts_sha256', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('approval_link_tokens', schema=None) as batch_op:
        batch_op.drop_column('facts_sha256')
