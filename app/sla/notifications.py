"""Mail to a tenant's managers when an item turns at risk or breaches its SLA. Sent by the
worker from the outbox; once per item, level and manager (sent_mails.notice_key)."""
from __future__ import annotations

from sqlalchemy import exists, select

from app.approvals.notifications import brand, item_summary, render_mail
from app.extensions import db
from app.mail.models import SentMail
from app.mail.sending import send_mail
from app.models import Membership, MembershipRole, Role, User, WorkItem
from app.work.states import OPEN_STATES

LEVELS = {"at_risk": "at risk", "breached": "breached"}


def tenant_managers(tenant_id: int) -> list[User]:
    return list(db.session.scalars(
        select(User).join(Membership, Membership.user_id == User.id)
        .join(MembershipRole, MembershipRole.membership_id == Membership.id)
        .where(Membership.tenant_id == tenant_id, MembershipRole.role == Role.MANAGER.value,
               User.active.is_(True))
        .distinct().order_by(User.id)))


def mail_managers(item_id: int, level: str) -> int:
    """Mail each manager of the item's tenant once about this item at this level. Nothing if
    the item has been decided meanwhile. Returns how many mails went."""
    item = db.session.get(WorkItem, item_id)
    if item is None or item.state not in OPEN_STATES:
        return 0
    tenant = item.tenant
    sent = 0
    for manager in tenant_managers(item.tenant_id):
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
