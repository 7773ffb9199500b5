"""Queue pages. Thin: read the filters, ask the queries for rows, call the write path, render."""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, urlencode

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from app.access import allow, declare_access
from app.params import arg_ids
from app.queues.filters import AGES, SLA_STATES, SORTS, BadCursor, QueueFilters
from app.queues.forms import BulkForm, SaveViewForm
from app.extensions import db, htmx
from app.models import Role, WorkItem
from app.queues.services import (
    BULK_ACTIONS,
    NothingDone,
    bulk_act,
    delete_view,
    save_view,
    views_of,
)
from app.queues.queries import (
    PAGE_SIZE,
    QUEUES,
    assignable_people,
    find_queue,
    in_queue,
    queue_counts,
    queue_items,
    queues_for,
    read_in_index_order,
)
from app.unit_of_work import after_commit, refused
from app.web import current_actor, current_tenant_id, render_page, wants_fragment
from app.work import kinds
from app.work.queries import scoped_items
from app.work.states import ACTING_ROLES

bp = Blueprint("queues", __name__)
declare_access(bp, member=True)


@bp.app_template_global()
def pane_query(queue_name: str, filters: QueueFilters) -> str:
    """The query string that opens an item in a queue's pane with the queue's context."""
    return urlencode({"queue": queue_name, **filters.query_args()})


class RowLinks(NamedTuple):
    """What a queue row's links are made of: the item page's URL up to its id, and the query
    string that opens the item in the pane with the queue's context (the same for every row)."""

    item_prefix: str
    pane_suffix: str


@bp.app_template_global()
def row_links(queue_name: str, filters: QueueFilters) -> RowLinks:
    sample = url_for("items.detail", item_id=0)  # the item URLs differ only by their id
    return RowLinks(sample.removesuffix("0"), "?" + pane_query(queue_name, filters))


@bp.get("/")
def home():
    roles = {r for m in current_user.memberships for r in m.role_set}
    if roles and roles <= {Role.REQUESTER.value}:
        return redirect(url_for("requests.index"))  # a requester's work is their requests
    return redirect(url_for("queues.show", name="mine"))


def _queue_or_404(actor, name: str, tenant_id):
    """The queue if the viewer's roles grant it: 404 for no such queue, 403 for one that
    exists but is not theirs."""
    queue = find_queue(actor, name, tenant_id)
    if queue is None:
        abort(404 if name not in QUEUES else 403)
    return queue


def queue_context(actor, name: str, args, rows_only: bool = False,
                  with_views: bool = True) -> dict:
    """Everything a queue page or fragment renders, for the queue `name` filtered by `args`
    (the saved views, in the page's side bar, only `with_views`)."""
    tenant_id = current_tenant_id()
    queue = _queue_or_404(actor, name, tenant_id)
    filters = QueueFilters.parse(args, actor.tenant_ids())
    cursor = args.get("after") or None
    try:
        items = queue_items(actor, name, tenant_id, filters, cursor, PAGE_SIZE + 1)
    except BadCursor:
        abort(400, "That page link is not valid; reload the queue.")
    more = len(items) > PAGE_SIZE
    items = items[:PAGE_SIZE]
    return {
        "queue": queue,
        "queues": queues_for(actor, tenant_id),
        "items": items,
        "filters": filters,
        "next_cursor": filters.cursor_for(items[-1]) if more else None,
        "after": cursor,
        "sorts": SORTS,
        "ages": AGES,
        "sla_states": SLA_STATES,
        "subtypes": kinds.SUBTYPES,
        "kinds": {k: v for k, v in (("approval", "Approval"),
                                    ("billing_exception", "Billing exception"),
                                    ("settlement_dispute", "Settlement dispute"))},
        "bulk_actions": BULK_ACTIONS,
        # Only a page or the results block shows these; "load more" rows need none of them.
        "people": [] if rows_only else assignable_people(actor, tenant_id),
        "tenants": sorted((m.tenant for m in actor.user.memberships), key=lambda t: t.name),
        "bulk_form": BulkForm(formdata=None),
        "save_form": SaveViewForm(formdata=None),
        "views": views_of(actor) if with_views and not rows_only else [],
        "page_size": PAGE_SIZE,
    }


@bp.get("/queues/<name>")
def show(name: str):
    actor = current_actor()
    rows_only = wants_fragment() and bool(request.args.get("after"))
    if rows_only:
        block = "rows"  # "load more": just the next rows
    elif wants_fragment() and htmx.target == "queue-results":
        block = "results"  # a filter changed: the table, not the whole page
    else:
        block = None
    # The rows and the counts read along the queue indexes under one setting of the planner.
    with read_in_index_order(request.args.get("status")):
        context = queue_context(actor, name, request.args, rows_only,
                                with_views=block is None)
        if block is None:
            context["counts"] = queue_counts(actor, current_tenant_id())
    return render_page("queues/queue.html", block, **context)


@bp.get("/queues/counts")
def counts():
    actor = current_actor()
    tenant_id = current_tenant_id()
    return render_page("queues/_counts.html", None, queues=queues_for(actor, tenant_id),
                       counts=queue_counts(actor, tenant_id),
                       queue=find_queue(actor, request.args.get("current", ""), tenant_id))


@bp.post("/queues/<name>/bulk")
@allow(roles=ACTING_ROLES)
def bulk(name: str):
    actor = current_actor()
    _queue_or_404(actor, name, current_tenant_id())
    form = BulkForm()
    if not form.validate_on_submit():
        abort(400)
    ids = arg_ids(request.form, "selected_ids")
    with refused(NothingDone) as refusal:
        result = bulk_act(actor, ids, form.action.data, assignee_id=form.assignee_id.data)
    if refusal:
        result = refusal.error.result
    titles = {}
    if result.refused:
        titles = {i.id: i.title for i in _titles(actor, [r[0] for r in result.refused])}
    verb = BULK_ACTIONS.get(form.action.data, form.action.data).lower()
    if result.fully_done:
        done = result.fully_done
        flash(f"{done} item{'s' if done != 1 else ''} "
              f"{'were' if done != 1 else 'was'} {_past(verb)}.", "success")
    for _item_id, what in result.partly:
        flash(f"{what}.", "success")
    for item_id, reason in result.refused:
        flash(f"#{item_id} {titles.get(item_id, '')}: not {_past(verb)}: {reason}", "error")
    args = MultiDict(parse_qs(form.filters.data or ""))
    target = url_for("queues.show", name=name) + (f"?{urlencode(args, doseq=True)}" if args else "")
    if wants_fragment():
        # The rows and the counts (kept by rollups, written at commit) as committed.
        return after_commit(_bulk_fragment, actor, name, args, result)
    return redirect(target, code=303)


def _bulk_fragment(actor, name: str, args, result):
    context = queue_context(actor, name, args, with_views=False)  # results and counts only
    context["counts"] = queue_counts(actor, current_tenant_id())
    context["bulk_result"] = result
    return render_page("queues/queue.html", "bulk_response",
                       status=200 if result.done else 403, **context)


def _past(verb: str) -> str:
    return {"approve": "approved", "release": "released", "reassign": "reassigned",
            "claim": "claimed"}.get(verb, verb)


def _titles(actor, ids):
    return db.session.scalars(scoped_items(actor).where(WorkItem.id.in_(ids))).all()


@bp.post("/queues/<name>/views")
def save(name: str):
    actor = current_actor()
    form = SaveViewForm()
    if not form.validate_on_submit():
        flash("Name the view to save it.", "error")
        return redirect(url_for("queues.show", name=name), code=303)
    _queue_or_404(actor, form.queue.data, current_tenant_id())
    view = save_view(actor, form.name.data, form.queue.data, form.filters.data or "")
    flash(f"Saved the view “{view.name}”.", "success")
    return redirect(_view_url(view), code=303)


@bp.post("/queues/views/<int:view_id>/delete")
def delete(view_id: int):
    # CSRFProtect has already checked the token of this POST.
    delete_view(current_actor(), view_id)
    flash("View deleted.", "info")
    return redirect(url_for("queues.home"), code=303)


def _view_url(view) -> str:
    return url_for("queues.show", name=view.queue) + (f"?{view.query}" if view.query else "")


def queue_row_update(actor, name: str, filters_qs: str, item) -> tuple[str, bool]:
    """Out-of-band HTML for an item's row (the item as just read) in a queue after an action,
    and whether it left. Rows travel inside <template>: a bare <tr> outside a table is dropped
    by the parser."""
    item_id = item.id
    tenant_id = current_tenant_id()
    queue = find_queue(actor, name, tenant_id)
    if queue is None:
        return "", False
    filters = QueueFilters.parse(MultiDict(parse_qs(filters_qs)), actor.tenant_ids())
    if in_queue(actor, name, tenant_id, filters, item_id):
        html = render_template("queues/_row_oob.html", item=item, queue=queue, filters=filters)
        left = False
    else:
        html = f'<template><tr id="row-{item_id}" hx-swap-oob="delete"></tr></template>'
        left = True
    html += render_template("queues/_counts.html", oob=True, queue=queue,
                            queues=queues_for(actor, tenant_id),
                            counts=queue_counts(actor, tenant_id))
    return html, left
