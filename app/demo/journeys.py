"""The demo requester's requests in every state, made now through the people's road (the
request form's service, the policy's evaluation, the approvers' decisions), so a new user sees
the whole journey: one waiting for their answer, one at each step, decided ones, a withdrawn
one, one the policy approved. Runs after the bulk seed; its mails leave through the outbox."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from app.actors import Actor
from app.approvals.services import approve_step, reject_approval, request_info, withdraw
from app.extensions import db
from app.models import Tenant, User, WorkItem
from app.policy.services import evaluate_items, policy_actor
from app.requests.services import submit_request
from app.unit_of_work import commit

# (subtype, counterparty, amount, reason, fields, what happens next)
JOURNEYS = [
    ("discount", "Blue Yonder Labs", "8400.00", "Three-year renewal; the competitor offers 35%.",
     {"discount_pct": "35", "contract_term_months": "36"}, "asked"),
    ("purchase_request", "Northwind Print Co", "4200.00", "Replacement printers for the office.",
     {"cost_centre": "CC-410", "gl_account": "6120", "vendor": "Northwind Print Co"}, "waiting"),
    ("credit_memo", "Fabrikam Retail", "62000.00", "Service outage credit agreed with the CFO.",
     {"invoice_number": "INV-2026-3310"}, "second_step"),
    ("refund", "Contoso Pharma", "3450.00", "Double charge on the November invoice.",
     {"invoice_number": "INV-2026-2987"}, "approved"),
    ("write_off", "Alpine Foods", "7300.00", "Customer insolvent; collections closed.",
     {"invoice_number": "INV-2025-8812"}, "rejected"),
    ("vendor_bill", "Tailspin Cloud", "2600.00", "Annual hosting, already budgeted.",
     {"vendor": "Tailspin Cloud", "invoice_number": "TS-7781"}, "withdrawn"),
    ("purchase_request", "Wide World Books", "240.00", "Reference books for the tax team.",
     {"cost_centre": "CC-220", "gl_account": "6400", "vendor": "Wide World Books"}, "auto"),
]


def _person(email: str) -> Actor:
    user = db.session.scalars(select(User).where(User.email == email)).one()
    return Actor.for_user(user, ip="127.0.0.1", user_agent="seed-demo")


def seed_journeys(slug: str = "northwind") -> int:
    """Raise and move the demo requester's journeys in one tenant; returns how many."""
    tenant = db.session.scalars(select(Tenant).where(Tenant.slug == slug)).one()
    requester = _person("requester@cleardesk.demo")
    approver, manager = _person("approver@cleardesk.demo"), _person("manager@cleardesk.demo")
    made = []
    for subtype, counterparty, amount, reason, fields, _next in JOURNEYS:
        item, _created = submit_request(
            requester, tenant_id=tenant.id, subtype=subtype, title=None,
            counterparty=counterparty, amount=amount, reason=reason, fields=fields,
            request_key=uuid.uuid4().hex)
        made.append(item.id)
    commit()
    evaluate_items(policy_actor(tenant.id), made)  # as the worker would, now
    commit()
    for item_id, (*_facts, step) in zip(made, JOURNEYS):
        item = db.session.get(WorkItem, item_id)
        if item.state != "pending":
            continue  # the policy decided it
        if step == "asked":
            request_info(approver, item_id, question="Can you attach the competitor's quote? "
                                                      "Is 15% enough to keep them?")
        elif step == "second_step":
            approve_step(approver, item_id, comment="Agreed with the account team.")
        elif step == "approved":
            approve_step(approver, item_id, comment="Confirmed the double charge.")
        elif step == "rejected":
            reject_approval(manager if item.current_step().role == "manager" else approver,
                            item_id, reason="Collections is still open; write off next quarter.")
        elif step == "withdrawn":
            withdraw(requester, item_id, comment="Paid from the IT budget instead.")
        commit()
    return len(made)
