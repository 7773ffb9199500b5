"""dashboard_steps: turnaround per approval step type, kept when each step is decided

The dashboard read the steps of the last 5,000 decided approvals of each tenant on every view
and worked out their business hours then; the step rollup keeps the same figure as each step
is decided. Steps decided before this revision are counted by
`flask dashboard rebuild-rollups` (business hours need each tenant's calendar, which SQL here
does not have): run it once after upgrading.

Revision ID: 4012a00f212d
Revises: 302975d159c5
Create Date: 2026-12-07 18:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


revision = '4012a00f212d'
down_revision = '302975d159c5'
branch_labels = None
depends_on = None

# The turnaround histogram's buckets when this revision was written (app.work.rollup_tables).
BUCKETS = [f"t{i:02d}" for i in range(23)]


def upgrade():
    op.create_table(
        'dashboard_steps',
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('step_type', sa.String(length=16), nullable=False),
        sa.Column('decided', sa.Integer(), nullable=False),
        sa.Column('turnaround_seconds', sa.BigInteger(), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in BUCKETS],
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'],
                                name=op.f('fk_dashboard_steps_tenant_id_tenants')),
        sa.PrimaryKeyConstraint('tenant_id', 'day', 'step_type', name=op.f('pk_dashboard_steps')),
    )


def downgrade():
    op.drop_table('dashboard_steps')
