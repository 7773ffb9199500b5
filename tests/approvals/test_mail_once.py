"""A mail is sent once even when its sender dies between the SMTP hand-over and the commit: a
real worker process is SIGKILLed by the real SMTP server the moment the mail arrives; the
retry sends nothing twice, the mail log shows the mail as unconfirmed, and the link in the
mail that went works."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from app.extensions import db
from app.mail.models import SentMail
from app.mail.sending import reconcile_unconfirmed
from app.models import WorkItem
from app.outbox.jobs import deliver_message
from app.outbox.models import OutboxMessage
from tests.approvals.conftest import ROOT
from tests.conftest import csrf_from


class KillSenderOnArrival:
    """Wraps the inbox's DATA hook: once the mail is received, SIGKILL the process sending it
    before the SMTP server answers, as a crash or an OOM kill would: the worker itself when it
    runs jobs in its own process (WORKER_CLASS=simple), else its work-horse."""

    def __init__(self, inbox, in_process: bool):
        self.inbox, self.in_process, self.worker_pid, self.killed = inbox, in_process, None, []
        self._handle = inbox.handle_DATA

    async def handle_DATA(self, server, session, envelope):
        answer = await self._handle(server, session, envelope)
        if self.in_process:
            senders = [self.worker_pid]
        else:
            children = Path(f"/proc/{self.worker_pid}/task/{self.worker_pid}/children")
            senders = [int(p) for p in children.read_text().split()] if children.exists() else []
        for pid in senders:
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
        return answer


def _worker(app, worker_class: str) -> subprocess.Popen:
    config = app.config
    env = dict(os.environ, DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
               REDIS_URL=config["REDIS_URL"], RQ_QUEUE=config["RQ_QUEUE"],
               SECRET_KEY=config["SECRET_KEY"], SMTP_HOST=config["SMTP_HOST"],
               SMTP_PORT=str(config["SMTP_PORT"]), APP_BASE_URL=config["APP_BASE_URL"],
               WORKER_CLASS=worker_class)
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker", "--burst",
         "--without-scheduler"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("worker_class", ["simple", "fork"])
def test_a_sender_killed_after_the_smtp_hand_over_mails_once_and_the_link_works(
        relaying, inbox, team, make_item, client, auth, make_user, worker_class):
    killer = KillSenderOnArrival(inbox, in_process=worker_class == "simple")
    inbox.handle_DATA = killer.handle_DATA
    item = make_item(team["tenant"], amount="1200.00", requester=team["requester"])
    worker = _worker(relaying, worker_class)
    killer.worker_pid = worker.pid
    _out, errors = worker.communicate(timeout=120)
    assert killer.killed, f"the sender was not killed: {errors}"
    [mail] = inbox.to("ann@x.test")
    [row] = db.session.scalars(select(SentMail)).all()
    assert row.status == "sending"  # committed before the hand-over, never marked sent
    message = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.topic == "approval.step_assigned")).one()
    assert message.processed_at is None

    # The retry (RQ's, or the sweep's): the same handler on the same message.
    inbox.handle_DATA = killer._handle
    assert deliver_message(message.id) == "processed"
    time.sleep(0.2)
    assert len(inbox.to("ann@x.test")) == 1  # not mailed twice
    db.session.expire_all()
    [row] = db.session.scalars(select(SentMail)).all()
    assert row.status == "unconfirmed"
    assert reconcile_unconfirmed() == 0

    # An admin sees it as unconfirmed.
    make_user("adam@x.test", [team["tenant"]], roles=("admin",))
    auth.login("adam@x.test")
    page = client.get("/admin/mail/")
    assert "unconfirmed" in page.text and "ann@x.test" in page.text

    # The link in the mail that went works: Ann approves from it.
    path = urlsplit(inbox.link(mail)).path
    link_page = client.get(path)
    assert link_page.status_code == 200 and "Approve" in link_page.text
    decided = client.post(path, data={"action": "approve",
                                      "csrf_token": csrf_from(link_page.text)})
    assert decided.status_code in (200, 303)
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "approved"


def test_a_mail_left_sending_is_marked_unconfirmed_by_the_reconciler(relaying, inbox, team,
                                                                     make_item):
    from datetime import timedelta

    from sqlalchemy import update

    from app.approvals.notifications import send_digest
    from app.types import utcnow
    from app.unit_of_work import commit

    send_digest(team["approver"], team["tenant"], [], "2026-03-10")
    commit()
    db.session.execute(update(SentMail).values(status="sending",
                                               sent_at=utcnow() - timedelta(hours=1)))
    commit()
    assert reconcile_unconfirmed() == 1
    assert db.session.scalars(select(SentMail.status)).one() == "unconfirmed"
    # The digest is not sent again for that day.
    send_digest(team["approver"], team["tenant"], [], "2026-03-10")
    commit()
    assert len(inbox.to("ann@x.test")) == 1
