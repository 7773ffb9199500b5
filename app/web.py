"""What every page shares: the actor of a request, the fragment-or-page decision, navigation,
security headers and the error pages."""
from __future__ import annotations


from flask import Flask, Response, current_app, render_template, request, session
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from flask_htmx import make_response as htmx_response
from jinja2_fragments.flask import render_block

from app.actors import Actor
from app.errors import DomainError
from app.extensions import htmx
from app.models import Role
from app.types import tenant_time, utcnow
from app.unit_of_work import database_unreachable, roll_back_quietly
from app.work.kinds import SUBTYPES


def current_actor() -> Actor:
    return Actor.for_user(current_user._get_current_object(), request.remote_addr,
                          request.user_agent.string)


def request_origin() -> str:
    """The origin (scheme, host and port) the browser sent this request to: what a passkey's
    answer must name (app.auth.passkeys)."""
    return f"{request.scheme}://{request.host}"


def wants_fragment() -> bool:
    """True for an htmx request that swaps part of a page; a boosted navigation (a link or
    form that htmx upgraded) wants the whole page."""
    return bool(htmx) and not htmx.boosted


def render_page(template: str, block: str | None = None, status: int = 200, **context):
    """One template serves the full page and, for htmx, just the block that changes."""
    if block and wants_fragment():
        body = render_block(template, block, **context)
    else:
        body = render_template(template, **context)
    response = Response(body, status=status)
    response.headers.add("Vary", "HX-Request")
    return response


def message_fragment(message: str, status: int, category: str = "error") -> Response:
    """An htmx answer that shows `message` in the page's message area instead of swapping the
    request's target (htmx swaps error responses only when told where)."""
    return htmx_response(render_template("_flash_one.html", category=category, message=message),
                         status, retarget="#messages", reswap="afterbegin")


def form_errors(form, failed=None) -> dict[str, list[str]]:
    """A form's field messages: its own checks' and those of the write path's refusal
    (a ValidationFailed's `fields`), for the form shown again."""
    errors = {name: list(messages) for name, messages in form.errors.items()}
    for name, message in (getattr(failed, "fields", None) or {}).items():
        errors.setdefault(name, []).append(message)
    return errors


def current_tenant_id() -> int | None:
    tenant_id = session.get("tenant_id")
    if tenant_id and current_user.is_authenticated and current_user.membership_in(tenant_id):
        return tenant_id
    return None


def _nav_context() -> dict:
    if not current_user.is_authenticated:
        return {}
    memberships = sorted(current_user.memberships, key=lambda m: m.tenant.name)
    tenant_id = current_tenant_id()
    roles: set[str] = set()
    for m in memberships:
        if tenant_id is None or m.tenant_id == tenant_id:
            roles |= m.role_set
    current = next((m.tenant for m in memberships if m.tenant_id == tenant_id), None)
    return {
        "nav_memberships": memberships,
        "nav_tenant": current,
        "nav_roles": roles,
        # Anything besides requesting work brings the queues; a requester has their requests.
        "nav_works_queues": bool(roles - {Role.REQUESTER.value}),
        # White-label: the tenant being worked in (or someone's only tenant) shows its brand.
        "nav_brand": current or (memberships[0].tenant if len(memberships) == 1 else None),
        "nav_admin": any(Role.ADMIN.value in m.role_set for m in memberships),
        "nav_away_capable": any(m.role_set & {Role.APPROVER.value, Role.MANAGER.value}
                                for m in memberships),
        "Role": Role,
    }


def localtime(value, tenant) -> str:
    """A stored UTC time shown in the tenant's timezone (UTC without a tenant)."""
    if value is None:
        return "—"
    return tenant_time(value, tenant.timezone if tenant is not None else None)


def _duration(seconds: float) -> str:
    minutes = int(abs(seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"


def sla_info(item) -> dict:
    """The SLA badge: its state and a short text with the time left or overdue."""
    state = item.sla_state or "on_track"
    if item.resolved_at is not None:
        return {"state": state, "text": "met" if state == "met" else "breached"}
    if state == "paused":
        return {"state": state, "text": "paused"}
    if item.sla_due_at is None:
        return {"state": state, "text": "no SLA"}
    left = (item.sla_due_at - utcnow()).total_seconds()
    if left < 0:
        return {"state": "breached", "text": f"overdue {_duration(left)}"}
    return {"state": state, "text": f"{_duration(left)} left"}


def subtype_label(kind: str, subtype: str) -> str:
    return SUBTYPES.get(kind, {}).get(subtype, subtype.replace("_", " "))


def install_web(app: Flask) -> None:
    app.context_processor(_nav_context)
    app.add_template_filter(localtime)
    app.add_template_filter(sla_info)
    app.add_template_global(subtype_label)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        )
        return response

    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError):
        # The unit of work failed and was rolled back (app.unit_of_work.App): nothing is kept.
        if wants_fragment():
            return message_fragment(error.message, error.status)
        template = {404: "errors/404.html", 403: "errors/403.html"}.get(
            error.status, "errors/conflict.html")
        return render_template(template, message=error.message), error.status

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        if not current_user.is_authenticated and request.endpoint not in (
                "auth.login", "auth.forgot_password", "auth.login_code",
                "auth.login_code_passkey_options", "auth.passkey_sign_in_options",
                "auth.passkey_sign_in"):
            # Most often an expired session: sign in again rather than a dead button.
            # Imported here: the auth package, above this module, imports it.
            from app.auth.session import sign_in_redirect

            return sign_in_redirect()
        message = ("This form has expired or did not come from Cleardesk. "
                   "Reload the page and try again.")
        if htmx:
            return message_fragment(message, 400)
        return render_template("errors/400.html", message=message), 400

    for status in (400, 403, 404, 405, 413, 500):
        app.register_error_handler(status, _make_error_page(status))


def _make_error_page(status: int):
    template = f"errors/{status}.html" if status in (403, 404, 500) else "errors/400.html"

    def handler(error):
        if status == 500 and database_unreachable(error):
            if request.method in ("GET", "HEAD", "OPTIONS"):
                said = "Nothing was changed."
            else:  # its commit may have gone through just before the connection went
                said = "What you did may or may not have been saved: check before doing it again."
            return bare_error_page(
                503, "Cleardesk cannot reach its database",
                f"{said} It usually comes back within seconds: try again in a moment.")
        message = getattr(error, "description", None)
        if status == 413:
            message = (f"What you sent is larger than the {request.max_content_length // 1024:,}"
                       " KB this page takes.")
        try:
            if htmx:
                return message_fragment(message or "That did not work.", status)
            return render_template(template, message=message), status
        except Exception:  # noqa: BLE001 - the page itself failed (its user, its menus)
            current_app.logger.exception("the %s page could not be rendered", status)
            return bare_error_page(status, "Something went wrong on our side",
                                   "The error was logged. Try again in a moment.")

    return handler


def bare_error_page(status: int, title: str, message: str) -> Response:
    """An error page that needs nothing but the process: no database, no signed-in user, no
    context processors (rendered straight from the template environment). For htmx, the
    message goes to the page's message area."""
    roll_back_quietly()
    if htmx:
        body = current_app.jinja_env.get_template("_flash_one.html").render(
            category="error", message=f"{title}. {message}")
        response = htmx_response(body, status, retarget="#messages", reswap="afterbegin")
    else:
        body = current_app.jinja_env.get_template("errors/bare.html").render(
            title=title, message=message, status=status)
        response = Response(body, status=status)
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response
