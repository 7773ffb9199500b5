"""team queues and policy rules for exceptions and disputes

Named team queues on work items (a column, and partial indexes over the open items in one);
policy rules for billing exceptions and settlement disputes (their kind, the priority they
set, the role they assign to) and what their receipts record; saved views of a team queue.

Revision ID: 516cc9d49f36
Revises: d69327a948b4
Create Date: 2026-11-27 17:45:40.968404

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '516cc9d49f36'
down_revision = 'd69327a948b4'
branch_labels = None
depends_on = None

OPEN = ("state IN ('escalated', 'info_requested', 'investigating', 'open', 'pending', "
        "'under_review', 'waiting_on_customer')")
IN_TEAM_QUEUE = f"{OPEN} AND team_queue IS NOT NULL"
TEAM_INDEXES = (("sla", "sla_due_at"), ("amount", "amount"), ("created", "created_at"))


def _where(condition: str) -> dict:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade():
    with op.batch_alter_table('policy_decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('assign_role', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('assignee_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_policy_decisions_assignee_id_users'), 'users', ['assignee_id'], ['id'])

    with op.batch_alter_table('policy_rules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=32), server_default=sa.text("'approval'"), nullable=False))
        batch_op.add_column(sa.Column('set_priority', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('assign_role', sa.String(length=20), nullable=True))

    with op.batch_alter_table('saved_views', schema=None) as batch_op:
        batch_op.alter_column('queue', existing_type=sa.VARCHAR(length=32),
                              type_=sa.String(length=80), existing_nullable=False)

    with op.batch_alter_table('work_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('team_queue', sa.String(length=64), nullable=True))
        batch_op.drop_index('ix_work_items_open_counts', **_where(OPEN))
        batch_op.create_index('ix_work_items_open_counts', ['tenant_id', 'kind', 'assignee_id', 'team_queue'], unique=False, **_where(OPEN))
        for name, column in TEAM_INDEXES:
            batch_op.create_index(f'ix_work_items_team_queue_{name}', ['team_queue', column, 'id'], unique=False, **_where(IN_TEAM_QUEUE))


def downgrade():
    with op.batch_alter_table('work_items', schema=None) as batch_op:
        for name, _column in TEAM_INDEXES:
            batch_op.drop_index(f'ix_work_items_team_queue_{name}', **_where(IN_TEAM_QUEUE))
        batch_op.drop_index('ix_work_items_open_counts', **_where(OPEN))
        batch_op.create_index('ix_work_items_open_counts', ['tenant_id', 'kind', 'assignee_id'], unique=False, **_where(OPEN))
        batch_op.drop_column('team_queue')

    with op.batch_alter_table('saved_views', schema=None) as batch_op:
        batch_op.alter_column('queue', existing_type=sa.String(length=80),
                              type_=sa.VARCHAR(length=32), existing_nullable=False)

    with op.batch_alter_table('policy_rules', schema=None) as batch_op:
        batch_op.drop_column('assign_role')
        batch_op.drop_column('set_priority')
        batch_op.drop_column('kind')

    with op.batch_alter_table('policy_decisions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_policy_decisions_assignee_id_users'), type_='foreignkey')
        batch_op.drop_column('assignee_id')
        batch_op.drop_column('assign_role')
        batch_op.drop_column('priority')
