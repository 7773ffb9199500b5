"""Sending one mail over SMTP (SMTP_HOST, SMTP_PORT, optional STARTTLS and credentials) and
logging it in sent_mails with the secrets it carried redacted.

Exactly once where people can see it: the mail's row (with its notice key) and everything
its unit of work made so far (the link token in it) are committed as "sending" BEFORE the
SMTP hand-over, and the row is marked "sent" after. A process killed in between leaves a
"sending" row: the job's retry finds it (already_sent) and does not mail again — the mail
that may have gone carries a link that was committed and works — and marks it "unconfirmed",
which the admins' mail page shows (as does the periodic reconcile_unconfirmed). We choose
never twice over maybe lost, and make the maybe visible. An SMTP error that says the mail did
not go removes the row, so the retry sends it."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from flask import current_app

from datetime import timedelta

from sqlalchemy import select, update

from app.extensions import db
from app.mail.models import MailStatus, SentMail
from app.models import Tenant, User
from app.types import utcnow
from app.unit_of_work import commit

# A row still "sending" this long after it was committed is no send in progress any more.
UNCONFIRMED_AFTER = timedelta(minutes=10)

REDACTED = "[link token redacted]"


def smtp_send(message: EmailMessage) -> None:
    config = current_app.config
    with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"],
                      timeout=config["SMTP_TIMEOUT"]) as smtp:
        if config.get("SMTP_USE_TLS"):
            smtp.starttls(context=ssl.create_default_context())
        if config.get("SMTP_USERNAME"):
            smtp.login(config["SMTP_USERNAME"], config.get("SMTP_PASSWORD") or "")
        smtp.send_message(message)


def send_mail(*, tenant: Tenant | None, recipient: User, subject: str, text: str, html: str,
              kind: str, item_id: int | None = None, step_id: int | None = None,
              notice_key: str | None = None, secrets: tuple[str, ...] = ()) -> SentMail:
    """Log the mail as sending and COMMIT the unit of work so far (so a notice that must go
    once is known before anything is sent, and the link in it exists), hand it to the SMTP
    server, then mark it sent (the caller's commit saves that). A notice already logged is not
    sent again (see already_sent). An SMTP failure removes the row and raises: the job is
    retried and mails it then."""
    if notice_key is not None and already_sent(notice_key):
        return db.session.scalars(select(SentMail).where(SentMail.notice_key == notice_key)).one()
    stored = text
    for secret in secrets:
        stored = stored.replace(secret, REDACTED)
    sender_name = f"{tenant.display_name} via Cleardesk" if tenant else "Cleardesk"
    sender = current_app.config["MAIL_FROM"]
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = formataddr((sender_name, sender))
    message["To"] = formataddr((recipient.name, recipient.email))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "cleardesk.local")
    # Ask autoresponders not to answer, and mail scanners' previews not to be counted as use.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    row = SentMail(tenant_id=tenant.id if tenant else None, item_id=item_id, step_id=step_id,
                   recipient_id=recipient.id, recipient=recipient.email, kind=kind,
                   notice_key=notice_key, subject=subject, text_body=stored,
                   message_id=message["Message-ID"], sent_at=utcnow(),
                   status=MailStatus.SENDING)
    db.session.add(row)
    commit()
    try:
        smtp_send(message)
    except Exception:
        db.session.rollback()
        db.session.execute(SentMail.__table__.delete().where(SentMail.__table__.c.id == row.id))
        commit()
        raise
    row.status = MailStatus.SENT
    row.sent_at = utcnow()
    return row


def already_sent(notice_key: str) -> bool:
    """Whether the notice was mailed, or may have been: a row still "sending" is a send that
    died after its commit, so it is marked unconfirmed (and not mailed again). Call it before
    making anything the mail would carry (a new link would revoke the one already mailed)."""
    row = db.session.scalars(select(SentMail).where(SentMail.notice_key == notice_key)).first()
    if row is None:
        return False
    if row.status == MailStatus.SENDING:
        row.status = MailStatus.UNCONFIRMED
    return True


def reconcile_unconfirmed() -> int:
    """Periodic: mails left "sending" for longer than any send takes are marked unconfirmed,
    so admins see them even when no retry comes along."""
    result = db.session.execute(
        update(SentMail)
        .where(SentMail.status == MailStatus.SENDING,
               SentMail.sent_at < utcnow() - UNCONFIRMED_AFTER)
        .values(status=MailStatus.UNCONFIRMED)
        .execution_options(synchronize_session=False))
    commit()
    return result.rowcount
