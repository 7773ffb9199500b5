"""routing: parallel approval steps, votes, approver groups, owner steps and policy expiry

Revision ID: dea893143ca2
Revises: c2f3daa225f4
Create Date: 2026-12-07 07:23:50.002978

"""
from alembic import op
import sqlalchemy as sa

import app.types


# revision identifiers, used by Alembic.
revision = 'dea893143ca2'
down_revision = 'c2f3daa225f4'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('approver_groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('created_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_approver_groups_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approver_groups')),
    sa.UniqueConstraint('tenant_id', 'name', name=op.f('uq_approver_groups_tenant_id_name'))
    )
    with op.batch_alter_table('approver_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approver_groups_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('approver_group_members',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['approver_groups.id'], name=op.f('fk_approver_group_members_group_id_approver_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_approver_group_members_user_id_users')),
    sa.PrimaryKeyConstraint('group_id', 'user_id', name=op.f('pk_approver_group_members'))
    )
    with op.batch_alter_table('approver_group_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approver_group_members_user_id'), ['user_id'], unique=False)

    op.create_table('approval_step_members',
    sa.Column('step_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['work_items.id'], name=op.f('fk_approval_step_members_item_id_work_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['step_id'], ['approval_steps.id'], name=op.f('fk_approval_step_members_step_id_approval_steps'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_approval_step_members_user_id_users')),
    sa.PrimaryKeyConstraint('step_id', 'user_id', name=op.f('pk_approval_step_members'))
    )
    with op.batch_alter_table('approval_step_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approval_step_members_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_approval_step_members_user_id'), ['user_id'], unique=False)

    op.create_table('approval_votes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('step_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=8), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('decided_at', app.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_approval_votes_decided_by_id_users')),
    sa.ForeignKeyConstraint(['item_id'], ['work_items.id'], name=op.f('fk_approval_votes_item_id_work_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['users.id'], name=op.f('fk_approval_votes_member_id_users')),
    sa.ForeignKeyConstraint(['step_id'], ['approval_steps.id'], name=op.f('fk_approval_votes_step_id_approval_steps'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approval_votes')),
    sa.UniqueConstraint('step_id', 'decided_by_id', name=op.f('uq_approval_votes_step_id_decided_by_id')),
    sa.UniqueConstraint('step_id', 'member_id', name=op.f('uq_approval_votes_step_id_member_id'))
    )
    with op.batch_alter_table('approval_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_approval_votes_item_id'), ['item_id'], unique=False)

    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('need', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('quorum', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reject_when', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('source_field', sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_approval_steps_group_id_approver_groups'), 'approver_groups', ['group_id'], ['id'])

    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expire_after_days', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_column('expire_after_days')

    with op.batch_alter_table('approval_steps', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_approval_steps_group_id_approver_groups'), type_='foreignkey')
        batch_op.drop_column('source_field')
        batch_op.drop_column('group_id')
        batch_op.drop_column('reject_when')
        batch_op.drop_column('quorum')
        batch_op.drop_column('need')

    with op.batch_alter_table('approval_votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approval_votes_item_id'))

    op.drop_table('approval_votes')
    with op.batch_alter_table('approval_step_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approval_step_members_user_id'))
        batch_op.drop_index(batch_op.f('ix_approval_step_members_item_id'))

    op.drop_table('approval_step_members')
    with op.batch_alter_table('approver_group_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approver_group_members_user_id'))

    op.drop_table('approver_group_members')
    with op.batch_alter_table('approver_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approver_groups_tenant_id'))

    op.drop_table('approver_groups')
