"""An item as a person deciding or following it reads it in a mail or on the email-link page:
what, how much, for whom, why, by when, its files and what the policy said of it."""
from __future__ import annotations

from flask import current_app

from app.extensions import db
from app.mail.rendering import money
from app.models import ApprovalStep, WorkItem
from app.policy.models import PolicyDecision
from app.web import localtime, subtype_label
from app.work import kinds
from app.work.attachments import item_attachments


def item_summary(item: WorkItem, step: ApprovalStep | None = None) -> dict:
    """What an approver needs to decide from a phone: what, how much, for whom, why, by when."""
    tenant = item.tenant
    steps = len(item.steps)
    return {
        "id": item.id,
        "title": item.title,
        "what": f"{item.kind_label}: {subtype_label(item.kind, item.subtype)}",
        "amount": money(item, item.amount),
        "counterparty": item.counterparty,
        "reason": (item.details or {}).get("reason"),
        "requester": item.requester.name if item.requester else None,
        "external_ref": f"{item.source_system} {item.external_ref}",
        "sla_due": localtime(item.sla_due_at, tenant),
        "step": (f"Step {step.position} of {steps} ({step.role})" if step and steps > 1
                 else None),
        "url": current_app.config["APP_BASE_URL"].rstrip("/") + f"/items/{item.id}",
        # The subtype's own fields (discount %, terms, invoice, cost centre…), the reason aside.
        "details": [(label, value) for label, value in kinds.labelled_details(
            {k: v for k, v in (item.details or {}).items() if k != "reason"})],
        "files": _files(item),
        **_policy_facts(item),
    }


def _files(item: WorkItem) -> list[dict]:
    """The evidence files, as an approver reads them before deciding: each opens (after
    signing in) from its own address."""
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    return [{"name": a.file_name, "size": a.size_text, "type": a.type_label,
             "sha": a.short_sha, "sha256": a.sha256,
             "url": f"{base}/items/{item.id}/attachments/{a.id}"}
            for a in item_attachments(item.id)]


def _policy_facts(item: WorkItem) -> dict:
    """What the policy said of the item: its risk score and the rule that routed it."""
    receipt = db.session.get(PolicyDecision, item.id)
    if receipt is None or receipt.decided_at is None:
        return {"risk_score": item.risk_score, "rule": None}
    rule = receipt.rule_name or "no rule matched (the fallback steps)"
    return {"risk_score": receipt.risk_score if receipt.risk_score is not None
            else item.risk_score,
            "rule": f"{rule}, policy version {receipt.policy_version}"}
