"""webhook deliveries: the due deliveries of one subscription, oldest first (a delivery job's batch)

Revision ID: cd0420d85ddf
Revises: a193a038a48c
Create Date: 2026-12-07 07:28:23.521089

"""
from alembic import op
import sqlalchemy as sa


revision = 'cd0420d85ddf'
down_revision = 'a193a038a48c'
branch_labels = None
depends_on = None

DUE = sa.text("status IN ('pending', 'retrying')")


def upgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_subscription_due', ['subscription_id', 'id'],
                              unique=False, postgresql_where=DUE, sqlite_where=DUE)


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_subscription_due')
