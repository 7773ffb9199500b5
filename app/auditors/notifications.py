"""Mail to the admins when a periodic verification finds a chain altered: the banner in the
app waits for someone to sign in, an altered audit trail should not. Sent by the worker from
the outbox; once per alert and admin (sent_mails.notice_key)."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import exists, select

from app.audit.models import AuditAlert
from app.auth.services import people_with_role
from app.extensions import db
from app.mail.models import SentMail
from app.mail.rendering import brand, render_mail
from app.mail.sending import send_mail
from app.models import Role, Tenant
from app.outbox.services import register_handler
from app.web import localtime


def mail_verification_failed(message) -> int:
    """Outbox handler of audit.verification_failed. Nothing once the alert is acknowledged;
    a retried job skips the admins already mailed. Returns how many mails went."""
    alert = db.session.get(AuditAlert, message.payload["alert_id"])
    if alert is None or alert.acknowledged_at is not None:
        return 0
    tenant = db.session.get(Tenant, alert.tenant_id) if alert.tenant_id else None
    name = tenant.display_name if tenant else "all tenants (the global chain)"
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    context = {
        "brand": brand(tenant) if tenant else {"name": "Cleardesk", "color": "#1f6feb"},
        "chain": name,
        "problem": alert.problem,
        "bad_seq": alert.bad_seq,
        "raised": (localtime(alert.raised_at, tenant) if tenant
                   else alert.raised_at.strftime("%Y-%m-%d %H:%M UTC")),
        "url": base + (f"/audit/?tenant={tenant.id}" if tenant else "/audit/"),
    }
    sent = 0
    # The tenant's admins; for the global chain, every tenant's.
    for admin in people_with_role(Role.ADMIN.value, alert.tenant_id):
        key = f"audit_alert:{alert.id}:{admin.id}"
        if db.session.scalar(select(exists().where(SentMail.notice_key == key))):
            continue
        send_mail(tenant=tenant, recipient=admin,
                  subject=f"Audit trail check failed: {name}",
                  text=render_mail("mail/audit_alert.txt", recipient=admin, **context),
                  html=render_mail("mail/audit_alert.html", recipient=admin, **context),
                  kind="audit_alert", notice_key=key)
        sent += 1
    return sent


# A periodic verification failed: the admins' banner reads the alert row; mail them too.
register_handler(mail_verification_failed, "audit.verification_failed")
