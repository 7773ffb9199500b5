"""item mentions: who a comment named, for mail and need-to-know

Revision ID: 7403853a0b35
Revises: 7310ffd4e927
Create Date: 2026-12-07 01:34:30.195335

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = '7403853a0b35'
down_revision = '7310ffd4e927'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('item_mentions',
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('mentioned_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['work_items.id'], name=op.f('fk_item_mentions_item_id_work_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['mentioned_by_id'], ['users.id'], name=op.f('fk_item_mentions_mentioned_by_id_users')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_item_mentions_user_id_users')),
    sa.PrimaryKeyConstraint('item_id', 'user_id', name=op.f('pk_item_mentions'))
    )
    with op.batch_alter_table('item_mentions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_mentions_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('item_mentions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_mentions_user_id'))

    op.drop_table('item_mentions')