"""The demo requester's requests in every state, made now through the people's road (the
request form's service, the policy's evaluation, the approvers' decisions), so a new user sees
the whole journey: one waiting for their answer, one at each step, one escalated to the approver's manager, decided ones, a withdrawn
one, one the policy approved; two carry evidence files. The policy routes them by each kind of
routing (all, any one or two of a group; the cost centre's owner). Runs after the bulk seed; its mails
leave through the outbox."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from app.actors import Actor
from app.approvals.escalation import escalate_step
from app.approvals.services import approve_step, reject_approval, request_info, withdraw
from app.extensions import db
from app.models import Tenant, User, WorkItem
from app.policy.evaluation import evaluate_items, policy_actor
from app.requests.services import submit_request
from app.types import utcnow
from app.unit_of_work import commit
from app.work.attachments import Upload

# (subtype, counterparty, amount, reason, fields, what happens next)
JOURNEYS = [
    ("discount", "Blue Yonder Labs", "8400.00", "Three-year renewal; the competitor offers 35%.",
     {"discount_pct": "35", "contract_term_months": "36"}, "asked"),
    ("purchase_request", "Northwind Print Co", "4200.00", "Replacement printers for the office.",
     {"cost_centre": "CC-410", "gl_account": "6120", "vendor": "Northwind Print Co",
      "cost_centre_owner_email": "approver@cleardesk.demo"}, "waiting"),
    ("purchase_request", "Litware Furniture", "5200.00", "Standing desks for the new floor.",
     {"cost_centre": "CC-410", "gl_account": "6130", "vendor": "Litware Furniture",
      "cost_centre_owner_email": "approver@cleardesk.demo"}, "escalated"),
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


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF of a few lines of text (Helvetica), with a correct cross-reference
    table, so any viewer opens it."""
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 12 Tf 72 760 Td 16 TL " + " ".join(
        f"({escape(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
            "%%EOF\n").encode()
    return bytes(out)


# Evidence the demo requests carry, by counterparty: a new user sees files on a request, in
# the approver's mail and pane, and their SHA-256 in the audit trail.
EVIDENCE = {
    "Fabrikam Retail": [("outage-credit-agreement.pdf", _pdf([
        "Fabrikam Retail - service credit agreement",
        "Outage: 2026-11-03 09:10 to 2026-11-04 17:40 UTC (32.5 hours)",
        "Credit agreed: USD 62,000.00 against invoice INV-2026-3310",
        "Approved in principle by the CFO on 2026-11-12."]))],
    "Contoso Pharma": [("november-charges.csv", (
        "invoice,date,description,amount\n"
        "INV-2026-2987,2026-11-02,Platform subscription (November),3450.00\n"
        "INV-2026-2987,2026-11-02,Platform subscription (November),3450.00\n").encode())],
}


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
            request_key=uuid.uuid4().hex,
            files=[Upload(name, data) for name, data in EVIDENCE.get(counterparty, ())])
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
        elif step == "escalated":
            # Its owner let it wait: the window is shortened to now, and the SLA sweep's own
            # escalation moves it to their manager.
            item.current_step().escalates_at = utcnow()
            escalate_step(Actor.system("sla"), item.current_step().id, utcnow())
        elif step == "second_step":
            approve_step(approver, item_id, comment="Agreed with the account team.")
        elif step == "approved":
            approve_step(approver, item_id, comment="Confirmed the double charge.")
            if db.session.get(WorkItem, item_id).state == "pending":  # two of a group
                approve_step(manager, item_id, comment="Agreed.")
        elif step == "rejected":
            reject_approval(manager if item.current_step().role == "manager" else approver,
                            item_id, reason="Collections is still open; write off next quarter.")
        elif step == "withdrawn":
            withdraw(requester, item_id, comment="Paid from the IT budget instead.")
        commit()
    return len(made)
