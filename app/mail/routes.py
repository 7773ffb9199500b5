"""The admins' page of sent mail: what Cleardesk mailed, to whom and when (link tokens
redacted), so the whole email flow can be followed without access to a mail server."""
from __future__ import annotations

from flask import Blueprint, abort, request
from flask_login import current_user

from app.access import declare_access
from app.mail.services import sent_mails_for_admin
from app.models import Role
from app.params import MAX_BIG_ID, arg_id
from app.web import current_actor, render_page

bp = Blueprint("mail", __name__, url_prefix="/admin/mail")
declare_access(bp, roles={Role.ADMIN})


@bp.get("/")
def sent():
    page = sent_mails_for_admin(current_actor(), before=arg_id(request.args, "before", MAX_BIG_ID))
    if page is None:
        abort(403, "Only admins can read the mail log.")
    return render_page("mail/sent_list.html", **page, user=current_user)
