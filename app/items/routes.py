"""Item detail and actions. Thin: parse the form, call the write path, render or redirect."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, url_for
from flask_login import login_required

from app.errors import DomainError, NotFound
from app.items.forms import ActionForm, CommentForm
from app.items.views import item_context
from app.unit_of_work import commit
from app.web import current_actor, render_page, wants_fragment
from app.work.actions import perform
from app.work.services import add_comment, get_item

bp = Blueprint("items", __name__, url_prefix="/items")


@bp.get("/<int:item_id>")
@login_required
def detail(item_id: int):
    actor = current_actor()
    item = get_item(actor, item_id)
    return render_page("items/detail.html", "panel", **item_context(actor, item))


@bp.post("/<int:item_id>/act")
@login_required
def act(item_id: int):
    actor = current_actor()
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        perform(actor, item_id, form.action.data, comment=form.comment.data,
                resolution_code=form.resolution_code.data or None,
                adjustment_amount=form.adjustment_amount.data or None,
                expected_version=form.version.data, assignee_id=form.assignee_id.data)
        commit()
    except DomainError as error:
        # NotFound stays a 404: redirecting would send the person to a page that is not there.
        if wants_fragment() or isinstance(error, NotFound):
            raise
        flash(error.message, "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    if wants_fragment():
        item = get_item(actor, item_id)
        response = render_page("items/detail.html", "panel", **item_context(actor, item))
        response.headers["HX-Trigger"] = "cleardesk:item-changed"
        return response
    flash("Done.", "success")
    return redirect(url_for("items.detail", item_id=item_id), code=303)


@bp.post("/<int:item_id>/comment")
@login_required
def comment(item_id: int):
    actor = current_actor()
    form = CommentForm()
    if not form.validate_on_submit():
        flash("Write a comment first.", "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    add_comment(actor, item_id, form.comment.data)
    commit()
    if wants_fragment():
        item = get_item(actor, item_id)
        return render_page("items/detail.html", "panel", **item_context(actor, item))
    return redirect(url_for("items.detail", item_id=item_id), code=303)
