"""Approver groups of a tenant ("Treasury", "Regional controllers EMEA"): named sets of members
that policy steps route to. Admins manage them; every change is audited. A change reaches the
steps that open after it: an open parallel step keeps the members it opened with."""
from __future__ import annotations

import re

from sqlalchemy import select

from app.actors import Actor
from app.admin.access import require_admin
from app.audit.services import record_event
from app.errors import NotFound, ValidationFailed
from app.extensions import db
from app.models import ApproverGroup, ApproverGroupMember, Membership, Tenant

GROUP_NAME = re.compile(r"^[^\W_][\w &.,()'+/-]{0,79}$")


def groups_of(actor: Actor, tenant: Tenant) -> list[ApproverGroup]:
    require_admin(actor, tenant)
    return list(db.session.scalars(select(ApproverGroup).where(
        ApproverGroup.tenant_id == tenant.id).order_by(ApproverGroup.name)))


def group_for_admin(actor: Actor, tenant: Tenant, group_id: int) -> ApproverGroup:
    require_admin(actor, tenant)
    group = db.session.get(ApproverGroup, group_id)
    if group is None or group.tenant_id != tenant.id:
        raise NotFound("No such group.")
    return group


def _clean_name(tenant: Tenant, name: str, group_id: int | None = None) -> str:
    name = " ".join((name or "").split())
    if not GROUP_NAME.match(name):
        raise ValidationFailed("The group's name is not valid.", {
            "name": "letters, digits, spaces and - & . , ( ) ' + / only, starting with a letter "
                    "or digit, at most 80 characters"})
    taken = db.session.scalars(select(ApproverGroup.id).where(
        ApproverGroup.tenant_id == tenant.id)).all()
    for other in db.session.scalars(select(ApproverGroup).where(ApproverGroup.id.in_(taken))):
        if other.id != group_id and other.name.casefold() == name.casefold():
            raise ValidationFailed("That name is taken.", {"name": "another group has it"})
    return name


def _clean_members(tenant: Tenant, user_ids) -> list[int]:
    wanted = sorted({int(u) for u in user_ids or ()})
    members = set(db.session.scalars(select(Membership.user_id).where(
        Membership.tenant_id == tenant.id, Membership.user_id.in_(wanted)))) if wanted else set()
    if set(wanted) - members:
        raise ValidationFailed("Only members of the tenant can be in its groups.",
                               {"members": "not a member of this tenant"})
    return wanted


def create_group(actor: Actor, tenant: Tenant, *, name: str,
                 member_ids=()) -> ApproverGroup:
    require_admin(actor, tenant)
    group = ApproverGroup(tenant_id=tenant.id, name=_clean_name(tenant, name))
    group.members = [ApproverGroupMember(user_id=u) for u in _clean_members(tenant, member_ids)]
    db.session.add(group)
    db.session.flush()
    record_event(actor, "approver_group.created", tenant_id=tenant.id,
                 data={"group_id": group.id, "name": group.name,
                       "members": sorted(group.member_ids)})
    return group


def update_group(actor: Actor, tenant: Tenant, group_id: int, *, name: str,
                 member_ids=()) -> ApproverGroup:
    group = group_for_admin(actor, tenant, group_id)
    before = {"name": group.name, "members": sorted(group.member_ids)}
    group.name = _clean_name(tenant, name, group.id)
    wanted = _clean_members(tenant, member_ids)
    group.members = [m for m in group.members if m.user_id in wanted] + [
        ApproverGroupMember(user_id=u) for u in wanted if u not in group.member_ids]
    db.session.flush()
    after = {"name": group.name, "members": sorted(group.member_ids)}
    if after != before:
        record_event(actor, "approver_group.updated", tenant_id=tenant.id,
                     data={"group_id": group.id, "before": before, "after": after})
    return group
