"""queue open counts kept by the ledger (the side bar reads counters, not the backlog); open steps by approver

Revision ID: 97cb6c8d019d
Revises: 2c0d749e9352
Create Date: 2026-12-07 03:59:22.859385

"""
from alembic import op
import sqlalchemy as sa


revision = '97cb6c8d019d'
down_revision = '2c0d749e9352'
branch_labels = None
depends_on = None

# The open states when this revision was written (app.models.OPEN_STATE_VALUES).
OPEN = ("escalated", "info_requested", "investigating", "open", "pending", "under_review",
        "waiting_on_customer")


def upgrade():
    op.create_table('queue_open_counts',
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=False),
    sa.Column('team_queue', sa.String(length=100), nullable=False),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_queue_open_counts_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('tenant_id', 'kind', 'assignee_id', 'team_queue', name=op.f('pk_queue_open_counts'))
    )
    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.create_index('ix_approval_steps_open_approver', ['approver_id', 'id'], unique=False,
                              postgresql_where=sa.text("state = 'open'"),
                              sqlite_where=sa.text("state = 'open'"))
    # The counters of the items already there; from now on the ledger keeps them.
    states = ", ".join(f"'{state}'" for state in OPEN)
    op.execute(
        "INSERT INTO queue_open_counts (tenant_id, kind, assignee_id, team_queue, items) "
        "SELECT tenant_id, kind, COALESCE(assignee_id, 0), COALESCE(team_queue, ''), COUNT(*) "
        f"FROM work_items WHERE state IN ({states}) "
        "GROUP BY tenant_id, kind, COALESCE(assignee_id, 0), COALESCE(team_queue, '')")


def downgrade():
    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_approval_steps_open_approver',
                            postgresql_where=sa.text("state = 'open'"),
                            sqlite_where=sa.text("state = 'open'"))
    op.drop_table('queue_open_counts')
