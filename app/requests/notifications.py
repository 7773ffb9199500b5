"""What people hear of items they follow, sent by the worker from the outbox: the requester's
side of the loop (a question from an approver, to answer and resubmit; the outcome of their
request: approved, with the rule when the policy approved it; rejected, with the reason;
expired), and a comment that mentions someone. One mail per message and person, never twice
(a notice key), never to a deactivated person."""
from __future__ import annotations

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.mail.models import SentMail
from app.mail.rendering import brand, money, render_mail
from app.mail.sending import send_mail
from app.models import Kind, User, WorkItem
from app.outbox.services import register_handler
from app.policy.models import PolicyDecision
from app.policy.summary import item_summary
from app.unit_of_work import commit

OUTCOMES = {"approved": "approved", "rejected": "rejected", "expired": "expired"}


def _requester(item: WorkItem | None) -> User | None:
    if item is None or item.kind != Kind.APPROVAL.value or item.requester_id is None:
        return None
    person = db.session.get(User, item.requester_id)
    return person if person is not None and person.active else None


def _send(item: WorkItem, person: User, *, kind: str, subject: str, headline: str,
          lines: list[str], notice_key: str) -> None:
    context = {"brand": brand(item.tenant), "item": item_summary(item), "headline": headline,
               "lines": lines, "recipient": person}
    send_mail(tenant=item.tenant, recipient=person, subject=subject,
              text=render_mail("mail/requester_notice.txt", **context),
              html=render_mail("mail/requester_notice.html", **context),
              kind=kind, item_id=item.id, notice_key=notice_key)


def _already(keys: list[str]) -> set[str]:
    return set(db.session.scalars(select(SentMail.notice_key)
                                  .where(SentMail.notice_key.in_(keys)))) if keys else set()


def mail_info_requested(message) -> None:
    """Outbox handler of item.info_requested: the requester reads the question, answers it on
    the request's page and resubmits (the item tops their list meanwhile)."""
    payload = message.payload or {}
    item = db.session.get(WorkItem, payload.get("item_id"))
    person = _requester(item)
    key = f"info:{message.id}"
    if person is None or item.state != "info_requested" or _already([key]):
        return
    asker = db.session.get(User, payload.get("asked_by")) if payload.get("asked_by") else None
    _send(item, person, kind="info_requested", notice_key=key,
          subject=f"Question about your request: {item.title} ({item.tenant.display_name})",
          headline=f"{asker.name if asker else 'An approver'} needs more information",
          lines=[f"“{payload.get('question') or ''}”",
                 "Answer on the request's page and resubmit; you may correct the amount or "
                 "details there. Until then the request waits for you and its SLA clock is "
                 "paused."])


def mail_requester_outcome(message) -> int:
    """Outbox handler of item.state_changed and items.state_changed: the requester of each
    approval that was decided hears the outcome. Each mail commits on its own notice key, so a
    retried message mails nobody twice. Returns how many mails went."""
    payload = message.payload or {}
    changes = payload.get("changes") or [payload]
    decided = [c for c in changes if c.get("to") in OUTCOMES and c.get("item_id")]
    keys = [f"outcome:{message.id}:{c['item_id']}" for c in decided]
    already = _already(keys)
    sent = 0
    for change, key in zip(decided, keys):
        if key in already:
            continue
        item = db.session.get(WorkItem, change["item_id"])
        person = _requester(item)
        if person is None or item.state != change["to"]:
            continue
        _send(item, person, kind=f"request_{item.state}", notice_key=key,
              subject=(f"Your request was {OUTCOMES[item.state]}: {item.title} — "
                       f"{money(item, item.amount)}"),
              headline=f"Your request was {OUTCOMES[item.state]}",
              lines=_outcome_lines(item))
        commit()
        sent += 1
    return sent


def _outcome_lines(item: WorkItem) -> list[str]:
    if item.decided_by_type == "policy":
        receipt = db.session.get(PolicyDecision, item.id)
        rule = receipt.rule_name if receipt is not None else None
        return [f"Approved automatically under the tenant's policy (version "
                f"{item.policy_version}{', rule “' + rule + '”' if rule else ''})."]
    last = db.session.scalars(
        select(AuditEvent).where(AuditEvent.chain_id == item.tenant_id,
                                 AuditEvent.item_id == item.id,
                                 AuditEvent.to_state == item.state)
        .order_by(AuditEvent.seq.desc()).limit(1)).first()
    who = db.session.get(User, last.actor_id) if last is not None and last.actor_id else None
    lines = [f"Decided by {who.name}." if who else "Decided."]
    if item.state == "rejected" and last is not None and last.comment:
        lines.append(f"Reason: “{last.comment}”")
    if item.state == "expired":
        lines = ["Nobody decided it within the policy's time; raise it again if it is still "
                 "needed."]
    return lines


def mail_mentioned(message) -> int:
    """Outbox handler of item.mentioned: each member mentioned in a comment is mailed it, with
    a link to the item (which they may now open). Once per message and person."""
    payload = message.payload or {}
    item = db.session.get(WorkItem, payload.get("item_id"))
    if item is None:
        return 0
    by = db.session.get(User, payload.get("by")) if payload.get("by") else None
    ids = [i for i in payload.get("user_ids") or [] if i != payload.get("by")]
    keys = [f"mention:{message.id}:{i}" for i in ids]
    already = _already(keys)
    sent = 0
    for user_id, key in zip(ids, keys):
        person = db.session.get(User, user_id)
        if key in already or person is None or not person.active:
            continue
        context = {"brand": brand(item.tenant), "item": item_summary(item),
                   "headline": f"{by.name if by else 'Someone'} mentioned you",
                   "lines": [f"“{payload.get('comment') or ''}”"], "recipient": person}
        send_mail(tenant=item.tenant, recipient=person,
                  subject=f"{by.name if by else 'Someone'} mentioned you on {item.title}",
                  text=render_mail("mail/requester_notice.txt", **context),
                  html=render_mail("mail/requester_notice.html", **context),
                  kind="mention", item_id=item.id, notice_key=key)
        commit()
        sent += 1
    return sent


# An approval's requester is told its outcome and asked the approver's question; the members a
# comment mentioned are mailed it.
register_handler(mail_requester_outcome, "item.state_changed", "items.state_changed")
register_handler(mail_info_requested, "item.info_requested")
register_handler(mail_mentioned, "item.mentioned")
