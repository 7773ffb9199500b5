"""mail status: sending before SMTP, sent after

A mail's row is committed as "sending" before it goes to the SMTP server, marked "sent" after;
one left "sending" (the process died in between) becomes "unconfirmed" and is never resent.
Rows from before this revision were all sent.

Revision ID: 9f7f3ad8bf23
Revises: 25f577d9c97a
Create Date: 2026-12-07 04:01:46.480688

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9f7f3ad8bf23'
down_revision = '25f577d9c97a'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sent_mails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='sent',
                                      nullable=False))
        batch_op.create_index('ix_sent_mails_status_sent', ['status', 'sent_at'], unique=False)


def downgrade():
    with op.batch_alter_table('sent_mails', schema=None) as batch_op:
        batch_op.drop_index('ix_sent_mails_status_sent')
        batch_op.drop_column('status')
