"""Sending one mail over SMTP (SMTP_HOST, SMTP_PORT, optional STARTTLS and credentials) and
logging it in sent_mails with the secrets it carried redacted."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from flask import current_app

from app.extensions import db
from app.mail.models import SentMail
from app.models import Tenant, User
from app.types import utcnow

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
    """Log the mail (flushed first, so a notice that must go once fails on its unique key
    before anything is sent), then hand it to the SMTP server. An SMTP failure raises: the
    caller's unit of work rolls back and its job is retried. Never commits."""
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
                   message_id=message["Message-ID"], sent_at=utcnow())
    db.session.add(row)
    db.session.flush()
    smtp_send(message)
    return row
