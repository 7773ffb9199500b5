"""Queue pages. Thin: pick the queue, ask the view for its rows, render."""
from __future__ import annotations

from flask import Blueprint, abort, redirect, request, url_for
from flask_login import login_required

from app.queues.views import PAGE_SIZE, queue_items, queues_for
from app.web import current_actor, current_tenant_id, render_page

bp = Blueprint("queues", __name__)


@bp.get("/")
@login_required
def home():
    return redirect(url_for("queues.show", name="mine"))


@bp.get("/queues/<name>")
@login_required
def show(name: str):
    actor = current_actor()
    tenant_id = current_tenant_id()
    available = queues_for(actor, tenant_id)
    queue = next((q for q in available if q.name == name), None)
    if queue is None:
        abort(404)
    items = queue_items(actor, name, tenant_id, request.args.get("before", type=int))
    return render_page("queues/queue.html", "rows" if request.args.get("before") else None,
                       queue=queue, queues=available, items=items,
                       more=len(items) == PAGE_SIZE)
