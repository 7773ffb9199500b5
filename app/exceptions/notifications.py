"""The "assigned to you" mail of billing exceptions and settlement disputes: when a manager
reassigns them or the policy routes them to a person, each assignee gets one mail per unit of
work (one item, or a digest of a bulk reassign or a policy batch) saying what, for which tenant,
how much, by when and why, with links. Sent by the worker from the outbox (work.assigned);
once per message and assignee (sent_mails.notice_key)."""
from __future__ import annotations

from collections import defaultdict

from flask import current_app
from sqlalchemy import select

from app.mail.rendering import DEFAULT_BRAND_COLOR, brand, money, render_mail
from app.approvals.services import standing_delegate
from app.extensions import db
from app.mail.models import SentMail
from app.mail.sending import send_mail
from app.models import Kind, Membership, Tenant, User, WorkItem
from app.outbox.services import register_handler
from app.types import utcnow
from app.unit_of_work import commit
from app.web import localtime, subtype_label
from app.work.states import OPEN_STATES

# Items listed in one mail; the rest are a link to "My work".
DIGEST_LIST_LIMIT = 50


def why(notice: dict) -> str:
    if notice.get("reason"):
        return notice["reason"]
    if notice.get("policy_version") is not None:
        rule = f' rule {notice["rule_position"]}' if notice.get("rule_position") else " rule"
        return (f'Routed by policy version {notice["policy_version"]},{rule} '
                f'"{notice.get("rule_name") or "unnamed"}"')
    return f'Reassigned by {notice.get("by_name") or "a manager"}'


def amounts(item: WorkItem) -> list[tuple[str, str]]:
    """The money lines a finance analyst looks at first, by kind."""
    if item.kind == Kind.SETTLEMENT_DISPUTE.value and item.delta is not None:
        return [("Claimed", money(item, item.claimed_amount)),
                ("Calculated", money(item, item.calculated_amount)),
                ("Delta", money(item, item.delta))]
    if item.kind == Kind.BILLING_EXCEPTION.value:
        return [("Amount at risk", money(item, item.amount_at_risk
                                         if item.amount_at_risk is not None else item.amount))]
    return [("Amount", money(item, item.amount))]


def away_note(membership: Membership | None, item: WorkItem) -> str | None:
    """The assignee is out of office today: say until when, and who stands in for them on
    this item if their delegation covers it (its kinds and maximum amount)."""
    if membership is None or not membership.is_away(utcnow().date()):
        return None
    until = membership.delegate_until.isoformat()
    delegate_id = standing_delegate(membership, item)
    delegate = db.session.get(User, delegate_id) if delegate_id else None
    if delegate is not None and delegate.active:
        return f"You are out of office until {until}; {delegate.name} stands in for you on it."
    return f"You are out of office until {until}; your delegation does not cover this item."


def case_summary(item: WorkItem, notice: dict, membership: Membership | None) -> dict:
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    lines = amounts(item)
    return {
        "id": item.id,
        "title": item.title,
        "what": f"{item.kind_label}: {subtype_label(item.kind, item.subtype)}",
        "amounts": lines,
        # The amount at risk, or the disputed delta.
        "headline": lines[-1][1], "headline_label": lines[-1][0],
        "counterparty": item.counterparty,
        "priority": item.priority,
        "external_ref": f"{item.source_system} {item.external_ref}",
        "sla_due": localtime(item.sla_due_at, item.tenant),
        "why": why(notice),
        "away": away_note(membership, item),
        "url": f"{base}/items/{item.id}",
    }


def _still_theirs(notices: list[dict]) -> dict[int, list[tuple[WorkItem, dict]]]:
    """assignee id -> [(item, notice)] of the notices whose item is still open and still
    assigned to that person (reassigned again or decided meanwhile: nothing to tell)."""
    ids = sorted({n["item_id"] for n in notices})
    items: dict[int, WorkItem] = {}
    for start in range(0, len(ids), 1000):
        items.update((i.id, i) for i in db.session.scalars(
            select(WorkItem).where(WorkItem.id.in_(ids[start:start + 1000]),
                                   WorkItem.state.in_(OPEN_STATES))))
    theirs: dict[int, list[tuple[WorkItem, dict]]] = defaultdict(list)
    for notice in notices:
        item = items.get(notice["item_id"])
        if item is not None and item.assignee_id == notice["assignee_id"]:
            theirs[notice["assignee_id"]].append((item, notice))
    return theirs


def _parts(user: User, entries: list[tuple[WorkItem, dict]]) -> list[dict]:
    """The assignee's items by tenant (name order), each tenant's at most DIGEST_LIST_LIMIT
    (most urgent SLA first), with the count of the rest."""
    memberships = {m.tenant_id: m for m in db.session.scalars(
        select(Membership).where(Membership.user_id == user.id))}
    by_tenant: dict[int, list[tuple[WorkItem, dict]]] = defaultdict(list)
    for item, notice in entries:
        by_tenant[item.tenant_id].append((item, notice))
    parts = []
    for tenant_id, listed in by_tenant.items():
        tenant = db.session.get(Tenant, tenant_id)
        listed.sort(key=lambda e: (e[0].sla_due_at is None, e[0].sla_due_at or 0, e[0].id))
        parts.append({"tenant": tenant, "brand": brand(tenant),
                      "items": [case_summary(item, notice, memberships.get(tenant_id))
                                for item, notice in listed[:DIGEST_LIST_LIMIT]],
                      "more": max(0, len(listed) - DIGEST_LIST_LIMIT)})
    parts.sort(key=lambda p: p["tenant"].name)
    return parts


def mail_assignment_notices(message) -> int:
    """Outbox handler of work.assigned: one mail to each assignee still holding items of the
    message, listing them. Deactivated people get none. Each mail commits on its own
    (sent_mails.notice_key per message and assignee), so a retry, or the message delivered
    twice, mails only those not yet mailed. Returns how many mails went."""
    notices = (message.payload or {}).get("notices") or []
    theirs = _still_theirs(notices)
    keys = {assignee_id: f"assigned:{message.id}:{assignee_id}" for assignee_id in theirs}
    already = set(db.session.scalars(select(SentMail.notice_key)
                                     .where(SentMail.notice_key.in_(list(keys.values())))))
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    # Every mail is rendered before the first is sent: each send commits, and a commit expires
    # the items every later mail would otherwise load again one by one.
    mails = []
    for assignee_id, entries in sorted(theirs.items()):
        user = db.session.get(User, assignee_id)
        if user is None or not user.active or keys[assignee_id] in already:
            continue
        parts = _parts(user, entries)
        count = len(entries)
        tenant = parts[0]["tenant"] if len(parts) == 1 else None
        mail_brand = (parts[0]["brand"] if tenant
                      else {"name": "Cleardesk", "color": DEFAULT_BRAND_COLOR})
        where = tenant.display_name if tenant else f"{len(parts)} tenants"
        if count == 1:
            only = parts[0]["items"][0]
            subject = f"Assigned to you: {only['title']} — {only['headline']} ({where})"
        else:
            subject = f"{count} items assigned to you ({where})"
        context = {"brand": mail_brand, "recipient": user, "parts": parts, "count": count,
                   "single": parts[0]["items"][0] if count == 1 else None,
                   "my_work_url": f"{base}/queues/mine"}
        mails.append(dict(tenant=tenant, recipient=user, subject=subject,
                          text=render_mail("mail/assigned.txt", **context),
                          html=render_mail("mail/assigned.html", **context),
                          kind="assigned", item_id=entries[0][0].id if count == 1 else None,
                          notice_key=keys[assignee_id]))
    for mail in mails:
        send_mail(**mail)
        commit()
    return len(mails)


# Exceptions and disputes were given to people by someone else or by the policy, in one unit
# of work: one "assigned to you" mail per assignee, listing their items.
register_handler(mail_assignment_notices, "work.assigned")
