"""Deactivating, removing and reactivating people: their sessions end, their claims go back and
their open steps are routed again, in the caller's transaction. Every function takes the actor,
checks that they administer the tenant (another tenant's admin gets NotFound, as if it did not
exist), records an audit event with before and after values, and never commits."""
from __future__ import annotations

from sqlalchemy import delete, select, update

from app.actors import Actor
from app.admin.access import is_admin_of, member_for_admin
from app.admin.delegation import clear_delegation_fields, delegation_of
from app.admin.models import PasswordLink
from app.admin.people import keep_an_admin
from app.approvals.models import ApprovalLinkToken, RevokeReason
from app.approvals.services import assign_step_approver
from app.audit.services import record_event
from app.auth.models import SessionEndReason
from app.auth.services import end_sessions
from app.errors import PermissionDenied
from app.extensions import db
from app.models import (
    ApprovalAssignment,
    ApprovalStep,
    Membership,
    Role,
    StepState,
    Tenant,
    User,
    WorkItem,
)
from app.types import utcnow
from app.work import ledger
from app.work.queries import open_items


def deactivate_user(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """End someone's access to Cleardesk. An account spans tenants, so only an admin of every
    tenant the person works in can deactivate it."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.id == actor.user_id:
        raise PermissionDenied("You cannot deactivate yourself; ask another admin.")
    if not user.active:
        return user
    others = [m.tenant for m in user.memberships
              if m.tenant_id != tenant.id and not is_admin_of(actor, m.tenant_id)]
    if others:
        raise PermissionDenied(f"{user.name} also works in tenants you do not administer; "
                               "an admin of each of their tenants must deactivate them.")
    for m in user.memberships:
        if Role.ADMIN.value in m.role_set:
            keep_an_admin(m.tenant, user.id)
    user.active = False
    ended = end_sessions(actor, user, SessionEndReason.DEACTIVATED)  # signed out everywhere
    db.session.flush()
    for m in user.memberships:
        handed = _hand_back_work(actor, user, m.tenant_id)
        record_event(actor, "user.deactivated", tenant_id=m.tenant_id,
                     data={"user_id": user.id, "email": user.email,
                           "before": {"active": True}, "after": {"active": False},
                           "sessions_ended": len(ended), **handed})
    # Unused password links die with the account.
    db.session.execute(update(PasswordLink).where(
        PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None),
        PasswordLink.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return user


def remove_member(actor: Actor, tenant: Tenant, user_id: int) -> User:
    """End someone's membership of this tenant only (their account and other tenants stay):
    their claims here are released, their open steps here routed to others, delegations to
    them here end."""
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.id == actor.user_id:
        raise PermissionDenied("You cannot remove yourself; ask another admin.")
    if Role.ADMIN.value in membership.role_set:
        keep_an_admin(tenant, user.id)
    before = {"roles": sorted(membership.role_set), "approval_limit": membership.approval_limit,
              "delegation": delegation_of(membership)}
    db.session.delete(membership)
    db.session.flush()
    db.session.expire(user, ["memberships"])
    handed = _hand_back_work(actor, user, tenant.id)
    record_event(actor, "membership.removed", tenant_id=tenant.id,
                 data={"user_id": user.id, "email": user.email, "before": before,
                       "after": None, **handed})
    return user


def reactivate_user(actor: Actor, tenant: Tenant, user_id: int) -> User:
    membership = member_for_admin(actor, tenant, user_id)
    user = membership.user
    if user.active:
        return user
    others = [m for m in user.memberships
              if m.tenant_id != tenant.id and not is_admin_of(actor, m.tenant_id)]
    if others:
        raise PermissionDenied(f"{user.name} also works in tenants you do not administer; "
                               "an admin of each of their tenants must reactivate them.")
    user.active = True
    db.session.flush()
    record_event(actor, "user.reactivated", tenant_id=tenant.id,
                 data={"user_id": user.id, "before": {"active": False},
                       "after": {"active": True}})
    return user


def _hand_back_work(actor: Actor, user: User, tenant_id: int) -> dict:
    """Release the person's claimed open items, route their open approval steps to someone
    else, end delegations to them and revoke their unused email links, in one tenant."""
    claimed = db.session.scalars(select(WorkItem).where(
        WorkItem.tenant_id == tenant_id, WorkItem.assignee_id == user.id, open_items())
        .order_by(WorkItem.id)).all()
    now = utcnow()
    ledger.apply_changes(actor, tenant_id, [
        ledger.Change(item, {"assignee_id": None, "claimed_at": None,
                             "last_actor_id": actor.user_id, "last_action_at": now},
                      action="item.released",
                      data={"previous_assignee_id": user.id, "reason": "deactivated"})
        for item in claimed], now=now)
    released = [item.id for item in claimed]

    # Delegations to them end first, so routing does not count on them standing in.
    ended = []
    for m in db.session.scalars(select(Membership).where(
            Membership.tenant_id == tenant_id, Membership.delegate_id == user.id)).all():
        ended.append(m.user_id)
        before = delegation_of(m)
        clear_delegation_fields(m)
        record_event(actor, "delegation.cleared", tenant_id=tenant_id,
                     on_behalf_of_id=m.user_id,
                     data={"user_id": m.user_id, "before": before, "after": None,
                           "reason": "delegate deactivated"})
    rerouted = []
    routed_step_ids = select(ApprovalAssignment.step_id).where(
        ApprovalAssignment.approver_id == user.id)
    steps = db.session.scalars(
        select(ApprovalStep).join(WorkItem, WorkItem.id == ApprovalStep.item_id)
        .where(WorkItem.tenant_id == tenant_id, ApprovalStep.state == StepState.OPEN.value,
               (ApprovalStep.approver_id == user.id) | ApprovalStep.id.in_(routed_step_ids))
    ).all()
    for step in steps:
        item = step.item
        db.session.execute(delete(ApprovalAssignment).where(
            ApprovalAssignment.step_id == step.id))
        step.approver_id = None
        db.session.flush()
        new_approver = assign_step_approver(item, step)
        record_event(actor, "approval.step_rerouted", tenant_id=tenant_id, item_id=item.id,
                     data={"step": step.position, "previous_approver_id": user.id,
                           "approver_id": new_approver, "reason": "deactivated"})
        rerouted.append(step.id)

    db.session.execute(update(ApprovalLinkToken).where(
        ApprovalLinkToken.tenant_id == tenant_id, ApprovalLinkToken.approver_id == user.id,
        ApprovalLinkToken.used_at.is_(None), ApprovalLinkToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=RevokeReason.SUPERSEDED.value))
    db.session.flush()
    return {"released_item_ids": released, "rerouted_step_ids": rerouted,
            "delegations_ended_for": ended}
