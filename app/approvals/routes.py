"""The email-link pages at /a/<token>. GET and HEAD only show the item and the decision forms
(mail scanners open every link); a POST decides through the write path. Thin: the rules live
in app.approvals.links."""
from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify, render_template, request
from flask_login import current_user
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from app.access import declare_access
from app.approvals.forms import LinkDecisionForm
from app.approvals.links import (
    LinkRefused,
    LinkStatus,
    LinkView,
    decide_by_link,
    inspect_link,
    record_refusal,
    step_up_threshold,
)
from app.approvals.redaction import install_log_redaction
from app.approvals.services import named_approver_id
from app.auth import passkeys
from app.errors import ValidationFailed
from app.extensions import csrf, db
from app.mail.rendering import brand, money
from app.models import User
from app.policy.summary import item_summary
from app.unit_of_work import commit_now, refused
from app.web import request_origin

bp = Blueprint("approval_links", __name__, url_prefix="/a")
declare_access(bp, anonymous=True)  # the link itself is the credential

STATUS_CODES = {
    LinkStatus.OK: 200,
    LinkStatus.TAMPERED: 400,
    LinkStatus.EXPIRED: 410,
    LinkStatus.USED: 409,
    LinkStatus.DECIDED: 409,
    LinkStatus.QUORUM_MET: 409,
    LinkStatus.REVOKED: 410,
    LinkStatus.SUPERSEDED: 409,
    LinkStatus.NOT_PERMITTED: 403,
    LinkStatus.SIGN_IN: 401,
    LinkStatus.WRONG_USER: 403,
    LinkStatus.CODE: 401,
    LinkStatus.ENROL: 403,
}


def install_email_links(app: Flask) -> None:
    # The form's own CSRF check answers with a page that fits a link (the app-wide handler
    # would send someone who is not signed in to the sign-in page).
    csrf.exempt(bp)
    app.register_blueprint(bp)
    install_log_redaction(app.logger)


@bp.after_request
def _link_headers(response: Response) -> Response:
    # The token is in the URL: no page may pass it on as a referrer, or be kept in a cache.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _name(user_id: int | None) -> str | None:
    user = db.session.get(User, user_id) if user_id else None
    return user.name if user else None


def _signed_in():
    return current_user._get_current_object() if current_user.is_authenticated else None


def _page(view: LinkView, form: LinkDecisionForm, *, status: int | None = None,
          error: str | None = None, done: dict | None = None):
    tenant = view.item.tenant if view.item else None
    context = {
        "view": view, "status": view.status, "S": LinkStatus, "form": form, "error": error,
        "done": done, "brand": brand(tenant) if tenant else None,
        "item": item_summary(view.item, view.step) if view.item else None,
        "tenant": tenant, "signed_in": _signed_in(), "money": money,
        "step_up_above": step_up_threshold(tenant),
        "login_next": request.path,
    }
    code = status or (200 if done else STATUS_CODES[view.status])
    return render_template("approvals/link.html", **context), code


@bp.get("/<token>")
def show(token: str):
    return _page(inspect_link(token, _signed_in()), LinkDecisionForm())


@bp.post("/<token>")
def decide(token: str):
    form = LinkDecisionForm()
    ip, agent = request.remote_addr, request.user_agent.string
    if not form.validate_on_submit():
        view = inspect_link(token, _signed_in())
        if "csrf_token" in form.errors:
            return _page(view, form, status=400, error=(
                "This page was open too long or did not come from Cleardesk. Nothing was "
                "changed; decide again below."))
        return _page(view, form, status=400, error="Choose Approve or Reject.")
    with refused() as refusal:
        view, item = decide_by_link(token, form.action.data, reason=form.reason.data,
                                    signed_in=_signed_in(), ip=ip, user_agent=agent,
                                    code=form.code.data, origin=request_origin(),
                                    passkey=passkeys.parse_answer(form.passkey.data)
                                    if form.passkey.data else None)
    error = refusal.error
    if isinstance(error, LinkRefused):
        record_refusal(error.view, ip, agent)
        commit_now("the refused use of a link is on record, whatever the page answers")
        return _page(error.view, form)
    if isinstance(error, ValidationFailed):
        return _page(inspect_link(token, _signed_in()), form, status=422, error=error.message)
    if error is not None:  # decided or changed at the same moment by someone else
        view = inspect_link(token, _signed_in())
        if view.ok:
            view.status, view.message = LinkStatus.NOT_PERMITTED, error.message
        return _page(view, form)
    db.session.refresh(item)
    next_step = item.current_step()
    done = {
        "action": form.action.data,
        "item_state": item.state,
        "next_step": next_step,
        "next_approver": _name(named_approver_id(next_step)) if next_step else None,
    }
    view.item = item
    return _page(view, form, done=done)


@bp.post("/<token>/passkey-options")
def passkey_options(token: str):
    """The options for the approver's browser to step up with a passkey (JSON, for
    app/static/passkeys.js): only for a link that may act, above the step-up amount, of an
    approver with a passkey. Keeps a new challenge for them; decides nothing."""
    try:
        validate_csrf(request.headers.get("X-CSRFToken"))
    except ValidationError:
        return jsonify(error="This page was open too long. Reload it and try again."), 400
    view = inspect_link(token, _signed_in())
    if not (view.ok and view.step_up and view.passkey):
        return jsonify(error="This link cannot be decided with a passkey now. Reload the "
                             "page."), 409
    options = passkeys.assertion_options(view.token.approver, request_origin(), "step_up_link")
    return jsonify(options)
