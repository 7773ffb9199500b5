"""The admins' page of sent mail: what Cleardesk mailed, to whom and when (link tokens
redacted), so the whole email flow can be followed without access to a mail server."""
from __future__ import annotations

from flask import Blueprint, abort, request
from flask_login import current_user, login_required

from app.mail.services import sent_mails_for_admin
from app.params import MAX_BIG_ID, arg_id
from app.web import current_actor, render_page

bp = Blueprint("mail", __name__, url_prefix="/admin/mail")


@bp.get("/")
@login_required
def sent():
    page = sent_mails_for_admin(current_actor(), before=arg_id(request.args, "before", MAX_BIG_ID))
    if page is None:
        abort(403, "Only admins can read the mail log.")
    return render_page("mail/sent_list.html", **page, user=current_user)
