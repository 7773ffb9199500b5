"""Mail to managers when items turn at risk or breach their SLA: one digest per manager per
SLA sweep, listing the items of the tenants they manage, with links (sla.digest). Sent by the
worker from the outbox; once per digest and manager (sent_mails.notice_key).

The per-item mails (sla.breached, sla.at_risk) are no longer written; their handlers stay for
messages queued before the digest existed."""
from __future__ import annotations


from flask import current_app
from sqlalchemy import exists, select
from sqlalchemy.orm import selectinload

from app.auth.services import people_with_role
from app.extensions import db
from app.mail.models import SentMail
from app.mail.rendering import DEFAULT_BRAND_COLOR, brand, render_mail
from app.mail.sending import send_mail
from app.models import Role, Tenant, User, WorkItem
from app.outbox.services import register_handler
from app.policy.summary import item_summary
from app.sla.models import SlaNotice
from app.unit_of_work import commit
from app.work.states import OPEN_STATES

# Items listed per tenant and level in one digest; the rest are a link to the queue.
DIGEST_LIST_LIMIT = 50

LEVELS = {"at_risk": "at risk", "breached": "breached"}


def mail_managers(item_id: int, level: str) -> int:
    """Mail each manager of the item's tenant once about this item at this level. Nothing if
    the item has been decided meanwhile. Returns how many mails went."""
    item = db.session.get(WorkItem, item_id)
    if item is None or item.state not in OPEN_STATES:
        return 0
    tenant = item.tenant
    sent = 0
    for manager in people_with_role(Role.MANAGER.value, item.tenant_id):
        key = f"sla-{level}:{item.id}:{manager.id}"
        if db.session.scalar(select(exists().where(SentMail.notice_key == key))):
            continue
        context = {"brand": brand(tenant), "item": item_summary(item), "recipient": manager,
                   "level": LEVELS[level], "priority": item.priority,
                   "assignee": item.assignee.name if item.assignee else None}
        subject = (f"SLA {LEVELS[level]}: {item.title} ({tenant.display_name})")
        send_mail(tenant=tenant, recipient=manager, subject=subject,
                  text=render_mail("mail/sla_escalation.txt", **context),
                  html=render_mail("mail/sla_escalation.html", **context),
                  kind=f"sla_{level}", item_id=item.id, notice_key=key)
        sent += 1
    return sent


def mail_sla_breached(message) -> None:
    """Outbox handler of sla.breached."""
    mail_managers(message.payload["item_id"], "breached")


def mail_sla_at_risk(message) -> None:
    """Outbox handler of sla.at_risk."""
    mail_managers(message.payload["item_id"], "at_risk")


def _digest_sections(message_id: int) -> dict[int, dict]:
    """tenant id -> {"tenant", "breached": [items], "at_risk": [items]} of the digest's
    notices whose items are still open (decided meanwhile: nothing to escalate)."""
    notices = db.session.execute(
        select(SlaNotice.tenant_id, SlaNotice.item_id, SlaNotice.level)
        .where(SlaNotice.digest_message_id == message_id).order_by(SlaNotice.id)).all()
    ids = sorted({n.item_id for n in notices})
    items: dict[int, WorkItem] = {}
    for start in range(0, len(ids), 1000):
        items.update((i.id, i) for i in db.session.scalars(
            select(WorkItem).where(WorkItem.id.in_(ids[start:start + 1000]),
                                   WorkItem.state.in_(OPEN_STATES))
            .options(selectinload(WorkItem.steps), selectinload(WorkItem.assignee))))
    sections: dict[int, dict] = {}
    for tenant_id, item_id, level in notices:
        item = items.get(item_id)
        if item is None:
            continue
        section = sections.get(tenant_id)
        if section is None:
            section = sections[tenant_id] = {"tenant": db.session.get(Tenant, tenant_id),
                                             "breached": [], "at_risk": []}
        section[level].append(item)
    return sections


def _listed(tenant: Tenant, items: list[WorkItem], level: str) -> dict:
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    shown = [{**item_summary(item), "priority": item.priority,
              "assignee": item.assignee.name if item.assignee else None}
             for item in items[:DIGEST_LIST_LIMIT]]
    return {"items": shown, "more": max(0, len(items) - DIGEST_LIST_LIMIT),
            "queue_url": f"{base}/queues/team?tenant={tenant.id}&sla={level}&sort=sla"}


def mail_sla_digest(message) -> int:
    """Outbox handler of sla.digest: one mail to each manager of the tenants concerned, listing
    the items of their tenants that breached (escalated) or turned at risk in that sweep. Each
    mail commits on its own (sent_mails.notice_key per digest and manager), so a retry after a
    failed send mails only those not yet mailed. Returns how many mails went."""
    sections = _digest_sections(message.id)
    recipients: dict[int, tuple[User, list[dict]]] = {}
    for tenant_id in sorted(sections, key=lambda t: sections[t]["tenant"].name):
        section = sections[tenant_id]
        tenant = section["tenant"]
        for manager in people_with_role(Role.MANAGER.value, tenant_id):
            _, parts = recipients.setdefault(manager.id, (manager, []))
            parts.append({"tenant": tenant, "brand": brand(tenant),
                          "breached": _listed(tenant, section["breached"], "breached"),
                          "at_risk": _listed(tenant, section["at_risk"], "at_risk")})
    sent = 0
    for manager_id, (manager, parts) in recipients.items():
        key = f"sla-digest:{message.id}:{manager_id}"
        if db.session.scalar(select(exists().where(SentMail.notice_key == key))):
            continue
        breached = sum(len(sections[p["tenant"].id]["breached"]) for p in parts)
        at_risk = sum(len(sections[p["tenant"].id]["at_risk"]) for p in parts)
        # One tenant: its own brand (white-label); several: Cleardesk's.
        tenant = parts[0]["tenant"] if len(parts) == 1 else None
        mail_brand = (parts[0]["brand"] if tenant
                      else {"name": "Cleardesk", "color": DEFAULT_BRAND_COLOR})
        counts = ", ".join(text for text in (f"{breached} breached" if breached else "",
                                             f"{at_risk} at risk" if at_risk else "") if text)
        where = tenant.display_name if tenant else f"{len(parts)} tenants"
        subject = f"SLA digest: {counts} ({where})"
        context = {"brand": mail_brand, "recipient": manager, "parts": parts,
                   "breached": breached, "at_risk": at_risk}
        send_mail(tenant=tenant, recipient=manager, subject=subject,
                  text=render_mail("mail/sla_digest.txt", **context),
                  html=render_mail("mail/sla_digest.html", **context),
                  kind="sla_digest", notice_key=key)
        commit()
        sent += 1
    return sent


# An SLA sweep escalated items: one digest mail per manager of the tenants concerned.
# sla.breached and sla.at_risk are no longer written (the digest replaces them); their handlers
# stay for messages already queued.
register_handler(mail_sla_digest, "sla.digest")
register_handler(mail_sla_breached, "sla.breached")
register_handler(mail_sla_at_risk, "sla.at_risk")
