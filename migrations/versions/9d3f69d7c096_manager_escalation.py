"""manager of a member, escalation of approval steps, fallback of a short parallel step

Revision ID: 9d3f69d7c096
Revises: dea893143ca2
Create Date: 2026-12-07 10:53:12.735492

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = '9d3f69d7c096'
down_revision = 'dea893143ca2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fallback_role', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('escalate_after', sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column('escalate_to', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('escalation_level', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('escalates_at', app.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_approval_steps_escalates_at'), ['escalates_at'], unique=False)

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('manager_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_memberships_manager_id_users'), 'users', ['manager_id'], ['id'])


def downgrade():
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_memberships_manager_id_users'), type_='foreignkey')
        batch_op.drop_column('manager_id')

    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approval_steps_escalates_at'))
        batch_op.drop_column('escalates_at')
        batch_op.drop_column('escalation_level')
        batch_op.drop_column('escalate_to')
        batch_op.drop_column('escalate_after')
        batch_op.drop_column('fallback_role')

