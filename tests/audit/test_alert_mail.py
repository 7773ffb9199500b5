"""A periodic verification that finds a chain altered mails the admins of that tenant, through
the outbox and a real worker and SMTP server, once per alert and admin."""
from sqlalchemy import select, text

from app.audit.jobs import anchor_chains
from app.audit.models import AuditAlert
from app.auditors.notifications import mail_verification_failed
from app.extensions import db
from app.outbox.models import OutboxMessage
from app.unit_of_work import commit
from app.work.services import add_comment
from tests.approvals.conftest import inbox, relaying, run_worker  # noqa: F401  (fixtures)
from tests.conftest import SYSTEM


def test_an_altered_chain_mails_its_tenants_admins_once_and_no_one_else(
        relaying, inbox, make_tenant, make_user, make_item, without_audit_triggers):
    northwind, contoso = make_tenant("northwind"), make_tenant("contoso")
    make_user("ada@x.test", [northwind], roles=("admin",), name="Ada Admin")
    make_user("carl@x.test", [contoso], roles=("admin",), name="Carl Contoso")
    make_user("max@x.test", [northwind], roles=("manager",), name="Max Manager")
    item = make_item(northwind)
    for n in range(3):
        add_comment(SYSTEM, item.id, f"checked {n}")
        commit()
    db.session.execute(text("UPDATE audit_events SET comment = 'nothing happened' "
                            "WHERE chain_id = :c AND seq = 3"), {"c": northwind.id})
    commit()

    assert anchor_chains() == "anchored 2 chains, 1 broken"
    run_worker(relaying)

    assert [m["To"] for m in inbox.messages] == ["Ada Admin <ada@x.test>"]
    [mail] = inbox.messages
    assert mail["Subject"] == "Audit trail check failed: Northwind"
    body = inbox.text(mail)
    assert "event #3 was edited" in body and "first bad event: #3" in body
    assert f"http://cleardesk.test/audit/?tenant={northwind.id}" in body

    # The verification runs again and finds the same problem: no second alert, no second mail;
    # and a retried delivery of the first message skips the admin already mailed.
    assert anchor_chains() == "anchored 2 chains, 1 broken"
    run_worker(relaying)
    [message] = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "audit.verification_failed")).all()
    assert mail_verification_failed(message) == 0
    assert len(inbox.messages) == 1
    assert len(db.session.scalars(select(AuditAlert)).all()) == 1
