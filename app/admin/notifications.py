"""The mails of accounts: an invitation and a password reset, each with a single-use link to
set a password (or, where a password would not let the person in, the tenant's single sign-on
link instead). The link is made by the worker when it sends the mail, so its secret is never
stored (only its hash) and the mail log keeps it redacted."""
from __future__ import annotations

from flask import current_app

from app.admin.models import PasswordLinkPurpose
from app.admin.password_links import issue_password_link
from app.auth.sso import password_sign_in_refusal, sso_tenants_of
from app.extensions import db
from app.mail.rendering import brand, render_mail
from app.mail.sending import already_sent, send_mail
from app.models import Role, Tenant, User
from app.outbox.services import register_handler
from app.web import localtime


def password_link_url(token: str) -> str:
    return current_app.config["APP_BASE_URL"].rstrip("/") + f"/account/set-password/{token}"


def mail_password_link(message) -> None:
    """Outbox handler of account.password_link: issue a fresh link (older ones stop working)
    and mail it. Nothing is sent to a deactivated account."""
    payload = message.payload
    user = db.session.get(User, payload["user_id"])
    if user is None or not user.active:
        return
    tenant = db.session.get(Tenant, payload["tenant_id"]) if payload.get("tenant_id") else None
    purpose = payload["purpose"]
    if already_sent(f"password:{message.id}"):
        return  # a retry after the mail went (or may have): its link stays the one that works
    if purpose == PasswordLinkPurpose.RESET.value and payload.get("self_service"):
        sso_tenant = _signs_in_through_sso_only(user)
        if sso_tenant is not None:
            # A password they could not use: tell them the way in instead, and issue no link.
            _mail_single_sign_on_instead(user, sso_tenant, f"password:{message.id}")
            return
    if purpose == PasswordLinkPurpose.INVITATION.value and tenant is not None \
            and _invited_into_sso_only(user, tenant):
        _mail_single_sign_on_instead(user, tenant, f"password:{message.id}", invitation=True)
        return
    token, row = issue_password_link(user, tenant.id if tenant else None, purpose)
    invitation = purpose == PasswordLinkPurpose.INVITATION.value
    context = {
        "brand": brand(tenant) if tenant else {"name": "Cleardesk", "color": "#1f6feb"},
        "recipient": user,
        "invitation": invitation,
        "self_service": bool(payload.get("self_service")),
        "link": password_link_url(token),
        "expires": localtime(row.expires_at, tenant) if tenant else
        row.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        "login_url": current_app.config["APP_BASE_URL"].rstrip("/") + "/login",
    }
    name = tenant.display_name if tenant else "Cleardesk"
    subject = (f"You are invited to {name} on Cleardesk" if invitation
               else f"Set a new Cleardesk password ({name})")
    send_mail(tenant=tenant, recipient=user, subject=subject,
              text=render_mail("mail/password_link.txt", **context),
              html=render_mail("mail/password_link.html", **context),
              kind=purpose, notice_key=f"password:{message.id}", secrets=(token,))


def _signs_in_through_sso_only(user: User) -> Tenant | None:
    """A tenant of the person's whose password sign-in is off (they are not one of its
    admins, who keep it as a way in), or None: a password reset would give them nothing."""
    if password_sign_in_refusal(user) != "password sign-in off":
        return None
    tenants = sso_tenants_of(user)
    return tenants[0] if tenants else None


def _invited_into_sso_only(user: User, tenant: Tenant) -> bool:
    """Whether the tenant the person is invited into signs its people in through its provider
    only: a password would not let them in (its admins keep one, for break-glass)."""
    return (tenant in sso_tenants_of(user)
            and Role.ADMIN.value not in user.roles_in(tenant.id))


def _mail_single_sign_on_instead(user: User, tenant: Tenant, notice_key: str, *,
                                 invitation: bool = False) -> None:
    """The tenant's single sign-on link in place of a password link: for a reset that could
    give nothing, or an invitation into a tenant whose password sign-in is off."""
    base = current_app.config["APP_BASE_URL"].rstrip("/")
    context = {"brand": brand(tenant), "recipient": user, "tenant": tenant,
               "invitation": invitation, "sso_url": f"{base}/login?tenant={tenant.slug}"}
    subject = (f"You are invited to {tenant.display_name} on Cleardesk" if invitation
               else f"Sign in to {tenant.display_name} through single sign-on")
    send_mail(tenant=tenant, recipient=user, subject=subject,
              text=render_mail("mail/sso_instead.txt", **context),
              html=render_mail("mail/sso_instead.html", **context),
              kind="invitation_sso" if invitation else "reset_sso_instead",
              notice_key=notice_key)


# An invitation or a password reset: the worker issues the single-use link and mails it.
register_handler(mail_password_link, "account.password_link")
