"""webhook deliveries: one per item of a batch message

Revision ID: a619667711c8
Revises: aeeef2916535
Create Date: 2026-11-27 17:33:53.085506

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a619667711c8'
down_revision = 'aeeef2916535'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('part', sa.Integer(), server_default='0', nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_webhook_deliveries_subscription_id_outbox_message_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_webhook_deliveries_subscription_id_outbox_message_id_part'), ['subscription_id', 'outbox_message_id', 'part'])


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_webhook_deliveries_subscription_id_outbox_message_id_part'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_webhook_deliveries_subscription_id_outbox_message_id'), ['subscription_id', 'outbox_message_id'])
        batch_op.drop_column('part')
