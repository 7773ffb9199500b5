"""Item detail and actions. Thin: parse the form, call the write path, render or redirect."""
from __future__ import annotations

import json
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, flash, redirect, request, url_for

from app.access import allow, declare_access
from app.errors import DomainError, NotFound, ValidationFailed
from app.items.forms import ActionForm, AttachForm, CommentForm
from app.items.views import item_context
from app.params import body_limit, storable
from app.queues.routes import queue_row_update
from app.queues.queries import QUEUES, TEAM_PREFIX
from app.unit_of_work import after_commit, refused
from app.web import current_actor, render_page, wants_fragment
from app.approvals.wording import outcome_message
from app.work.actions import perform
from app.work.attachments import (
    add_attachments,
    download_headers,
    open_attachment,
    read_uploads,
    uploads_body_limit,
)
from app.work.mentions import mention_candidates as find_mention_candidates
from app.work.services import add_comment
from app.work.queries import get_item
from app.work.states import ACTING_ROLES, COMMENT_ROLES

bp = Blueprint("items", __name__, url_prefix="/items")
declare_access(bp, member=True)


def _queue_context() -> dict | None:
    """When the item is shown in a queue's pane, the queue and its filters travel with the
    panel's forms, so an action can update that queue's row and counts."""
    source = request.form if request.method == "POST" else request.args
    name = source.get("queue")
    if not name or not (name in QUEUES or name.startswith(TEAM_PREFIX)):
        return None
    if request.method == "POST":
        filters = source.get("filters", "")
    else:
        filters = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "queue"])
    return {"queue": name, "filters": filters}


def _panel(actor, item_id: int, item=None):
    item = item or get_item(actor, item_id)
    return render_page("items/detail.html", "panel", queue_ctx=_queue_context(),
                       **item_context(actor, item))


@bp.get("/<bigid:item_id>")
def detail(item_id: int):
    return _panel(current_actor(), item_id)


@bp.post("/<bigid:item_id>/act")
@body_limit(uploads_body_limit)  # a requester's answer may carry files
@allow(roles=ACTING_ROLES)
def act(item_id: int):
    actor = current_actor()
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    with refused(DomainError) as refusal:
        item = perform(actor, item_id, form.action.data, comment=form.comment.data,
                resolution_code=form.resolution_code.data or None,
                adjustment_amount=form.adjustment_amount.data or None,
                expected_version=form.version.data, assignee_id=form.assignee_id.data,
                amount=form.amount.data or None,
                files=read_uploads(request.files.getlist("files")))
        message = outcome_message(item, form.action.data)
    if refusal:
        error = refusal.error
        # NotFound stays a 404: redirecting would send the person to a page that is not there.
        if wants_fragment() or isinstance(error, NotFound):
            raise error
        flash(error.message, "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    if wants_fragment():  # the pane, its timeline and the counts as committed
        return after_commit(_after_action, actor, item_id, message)
    flash(message + ".", "success")
    return redirect(url_for("items.detail", item_id=item_id), code=303)


@bp.post("/<bigid:item_id>/comment")
@allow(roles=COMMENT_ROLES)
def comment(item_id: int):
    actor = current_actor()
    form = CommentForm()
    if not form.validate_on_submit():
        flash("Write a comment first.", "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    with refused(ValidationFailed) as refusal:
        add_comment(actor, item_id, form.comment.data)
    if refusal:
        error = refusal.error
        if wants_fragment():
            raise error  # shown in the page's message area, the comment box keeps its text
        flash(f"{error.message} ({'; '.join(error.fields.values())})", "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    if wants_fragment():  # the pane with the comment in its timeline
        return after_commit(_panel, actor, item_id)
    return redirect(url_for("items.detail", item_id=item_id), code=303)


@bp.get("/<bigid:item_id>/mentions")
@allow(roles=COMMENT_ROLES)
def mention_candidates(item_id: int):
    """The members a comment on the item may mention, matching `q` (what follows the @): the
    options of the comment box's list."""
    typed = storable(request.args.get("q", ""), "q")
    people = find_mention_candidates(current_actor(), item_id, typed)
    return render_page("items/_mention_options.html", "options", people=people,
                       item_id=item_id, typed=typed)


@bp.post("/<bigid:item_id>/attachments")
@body_limit(uploads_body_limit)
@allow(roles=COMMENT_ROLES)
def attach(item_id: int):
    """Evidence files alone, from the item's pane."""
    actor = current_actor()
    form = AttachForm()
    if not form.validate_on_submit():
        abort(400, "This form has expired or did not come from Cleardesk. Reload the page.")
    with refused(DomainError) as refusal:
        added = add_attachments(actor, item_id, read_uploads(request.files.getlist("files")),
                                expected_version=form.version.data)
    if refusal:
        error = refusal.error
        if wants_fragment() or isinstance(error, NotFound):
            raise error  # shown in the page's message area
        flash(error.message, "error")
        return redirect(url_for("items.detail", item_id=item_id), code=303)
    message = (f"Added {added[0].file_name}" if len(added) == 1
               else f"Added {len(added)} files")
    if wants_fragment():  # the pane, its timeline and the counts as committed
        return after_commit(_after_action, actor, item_id, message)
    flash(message + ".", "success")
    return redirect(url_for("items.detail", item_id=item_id), code=303)


@bp.get("/<bigid:item_id>/attachments/<int:attachment_id>")
def attachment(item_id: int, attachment_id: int):
    """A file, to whoever may see its item; always a download, never shown inline."""
    row, data = open_attachment(current_actor(), item_id, attachment_id)
    return Response(data, headers=download_headers(row))


def _after_action(actor, item_id: int, message: str):
    """The new panel; in a queue's pane also the row (updated, or gone when the item left the
    queue) and the queue counts, swapped out of band, and an event that moves the focus."""
    item = get_item(actor, item_id)
    response = _panel(actor, item_id, item)
    context = _queue_context()
    left = False
    if context:
        extra, left = queue_row_update(actor, context["queue"], context["filters"], item)
        response.set_data(response.get_data(as_text=True) + extra)
    response.headers["HX-Trigger"] = json.dumps({"cleardesk:acted": {
        "id": item_id, "left": left, "message": message}})
    return response
