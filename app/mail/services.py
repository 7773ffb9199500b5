"""Reading the mail log, limited to the tenants the actor administers."""
from __future__ import annotations

from sqlalchemy import select

from app.actors import Actor
from app.extensions import db
from app.mail.models import SentMail
from app.mail.sink import links_by_message_id, sink_log_path
from app.models import Role

PAGE_SIZE = 50


def sent_mails_for_admin(actor: Actor, before: int | None = None) -> dict | None:
    """The newest mails of the tenants where the actor is an admin (keyset-paged by id); None
    when they administer none."""
    tenant_ids = {t for t in actor.tenant_ids() if Role.ADMIN.value in actor.roles_in(t)}
    if not tenant_ids:
        return None
    query = (select(SentMail).where(SentMail.tenant_id.in_(tenant_ids))
             .order_by(SentMail.id.desc()).limit(PAGE_SIZE + 1))
    if before:
        query = query.where(SentMail.id < before)
    mails = db.session.scalars(query).all()
    more = len(mails) > PAGE_SIZE
    mails = mails[:PAGE_SIZE]
    return {"mails": mails, "next_before": mails[-1].id if more else None,
            "sink_links": _sink_links(mails)}


def _sink_links(mails) -> dict[str, tuple[str, ...]]:
    """In development only: each mail's links as the local sink caught them (the database
    keeps them redacted), so the demo's approval links can be opened from the page."""
    from flask import current_app

    path = sink_log_path()
    if current_app.config["APP_ENV"] != "development" or path is None or not mails:
        return {}
    caught = links_by_message_id(path)
    return {m.message_id: caught[m.message_id] for m in mails if m.message_id in caught}
