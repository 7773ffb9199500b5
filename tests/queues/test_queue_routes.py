"""Queue pages over HTTP: who sees what, filters, keyset paging, counts, bulk actions, the
pane's out-of-band updates, saved views, and a query count that does not grow with rows."""
import re
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.models import WorkItem
from app.queues.models import SavedView
from app.unit_of_work import commit
from tests.conftest import arrange, csrf_from, statements_sent


@pytest.fixture
def world(make_tenant, make_user, make_item):
    nw = make_tenant("northwind")
    co = make_tenant("contoso", currency="EUR", timezone="Europe/Berlin", country="DE")
    people = {
        "requester": make_user("req@x.test", [nw, co], roles=("requester",)),
        "approver": make_user("approver@x.test", [nw, co], roles=("approver",), limit="100000"),
        "contoso": make_user("approver.contoso@x.test", [co], roles=("approver",)),
        "analyst": make_user("analyst@x.test", [nw, co], roles=("analyst",)),
        "manager": make_user("manager@x.test", [nw, co], roles=("manager",), limit="1000000"),
        "auditor": make_user("auditor@x.test", [nw, co], roles=("auditor",)),
    }
    return nw, co, people


def _titles(html):
    return re.findall(r'class="open-item"[^>]*>([^<]+)</a>', html)


def _ids(html):
    return [int(i) for i in re.findall(r'id="row-(\d+)"', html)]


def _item(make_item, tenant, title, requester=None, **kw):
    item = make_item(tenant, requester=requester, **kw)
    arrange(item, title=title,
            counterparty=title.split(" for ")[-1] if " for " in title else "Initech")
    return item


def test_unassigned_shows_only_open_items_of_kinds_my_roles_work(world, make_item, client, auth):
    nw, co, p = world
    approval = _item(make_item, nw, "Discount for Acme", p["requester"])
    exception = _item(make_item, nw, "Payment failed at Globex", kind="billing_exception")
    done = _item(make_item, nw, "Already done", p["requester"])
    arrange(done, state="approved")
    auth.login("approver@x.test")
    page = client.get("/queues/unassigned").text
    assert _titles(page) == ["Discount for Acme"]
    auth.login("analyst@x.test")
    assert _titles(client.get("/queues/unassigned").text) == ["Payment failed at Globex"]
    assert approval.id and exception.id


def test_filters_narrow_the_queue_and_travel_in_the_url(world, make_item, client, auth):
    nw, co, p = world
    _item(make_item, nw, "Refund for Acme Labs", p["requester"], amount="500.00")
    _item(make_item, nw, "Refund for Globex", p["requester"], amount="5000.00")
    _item(make_item, co, "Credit memo for Acme GmbH", p["requester"], amount="800.00")
    auth.login("approver@x.test")
    assert sorted(_titles(client.get("/queues/unassigned?q=acme").text)) == [
        "Credit memo for Acme GmbH", "Refund for Acme Labs"]
    assert _titles(client.get("/queues/unassigned?min_amount=1000").text) == ["Refund for Globex"]
    assert _titles(client.get(f"/queues/unassigned?q=acme&tenant={co.id}").text) == [
        "Credit memo for Acme GmbH"]
    # The htmx filter request gets just the results block.
    fragment = client.get("/queues/unassigned?q=globex",
                          headers={"HX-Request": "true", "HX-Target": "queue-results"})
    assert fragment.text.lstrip().startswith('<div id="queue-results">')
    assert "<html" not in fragment.text and "HX-Request" in fragment.headers["Vary"]


def test_nonsense_filters_are_ignored_with_a_message_not_an_error(world, make_item, client, auth):
    nw, co, p = world
    _item(make_item, nw, "Refund for Acme Labs", p["requester"])
    auth.login("approver@x.test")
    page = client.get("/queues/unassigned?min_amount=lots&sort=sideways&kind=unicorn")
    assert page.status_code == 200
    assert "Some filters were ignored" in page.text
    assert _titles(page.text) == ["Refund for Acme Labs"]


def test_a_tenant_that_is_not_mine_shows_nothing_of_it(world, make_item, client, auth):
    nw, co, p = world
    _item(make_item, nw, "Northwind secret deal", p["requester"])
    _item(make_item, co, "Contoso refund", p["requester"])
    auth.login("approver.contoso@x.test")
    for url in (f"/queues/unassigned?tenant={nw.id}", "/queues/unassigned?q=secret",
                "/queues/approvals", "/queues/mine?assignee=none", "/queues/counts"):
        body = client.get(url).text
        assert "Northwind secret deal" not in body and "northwind" not in body.lower(), url
    assert "not one of your tenants" in client.get(f"/queues/unassigned?tenant={nw.id}").text


def test_keyset_pages_follow_each_other_without_gaps_or_repeats(world, make_item, client, auth):
    nw, co, p = world
    for n in range(120):
        # Three items share each amount: ties are broken by id, across page boundaries too.
        _item(make_item, nw, f"Item {n:03d}", p["requester"], amount=f"{100 + n // 3}.00")
    auth.login("approver@x.test")
    seen = []
    url = "/queues/unassigned?sort=amount"
    pages = 0
    while url:
        body = client.get(url, headers={"HX-Request": "true"} if pages else {}).text
        seen += _titles(body)
        more = re.search(r'hx-get="([^"]*after=[^"]*)"', body)
        url = more.group(1).replace("&amp;", "&") if more else None
        pages += 1
    assert pages == 3
    assert seen == [f"Item {n:03d}" for n in range(119, -1, -1)]  # amount, largest first


def test_a_broken_page_cursor_is_a_clear_400(world, client, auth):
    auth.login("approver@x.test")
    response = client.get("/queues/unassigned?after=not-a-cursor")
    assert response.status_code == 400
    assert "page link is not valid" in response.text


def test_queue_page_runs_the_same_number_of_queries_for_5_or_50_rows(world, make_item, client,
                                                                      auth, app):
    nw, co, p = world
    auth.login("approver@x.test")

    def queries_for_page():
        count = 0

        def counter(*_args, **_kwargs):
            nonlocal count
            count += 1

        event.listen(db.engine, "before_cursor_execute", counter)
        try:
            assert client.get("/queues/unassigned").status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", counter)
        return count

    for n in range(5):
        _item(make_item, nw, f"Few {n}", p["requester"])
    few = queries_for_page()
    for n in range(60):
        _item(make_item, co if n % 2 else nw, f"Many {n}", p["requester"])
    many = queries_for_page()
    assert few == many, (few, many)


def test_counts_match_the_queues(world, make_item, client, auth):
    nw, co, p = world
    for n in range(3):
        _item(make_item, nw, f"Open {n}", p["requester"])
    auth.login("approver@x.test")
    body = client.get("/queues/counts").text
    assert re.search(r'data-queue="unassigned">3<', body)
    # Their steps were routed to the only approver: waiting on them, so in My work.
    assert re.search(r'data-queue="mine">3<', body)
    auth.login("manager@x.test")
    assert re.search(r'data-queue="mine">0<', client.get("/queues/counts").text)


def _bulk(client, auth, queue, ids, action, **extra):
    token = auth.csrf(f"/queues/{queue}")
    data = {"csrf_token": token, "action": action, "selected_ids": [str(i) for i in ids],
            "queue": queue, "filters": ""}
    data.update(extra)
    return client.post(f"/queues/{queue}/bulk", data=data)


def test_bulk_approve_goes_through_and_reports_each_refusal_with_its_reason(
        world, make_item, make_user, client, auth):
    nw, co, p = world
    small = make_user("small@x.test", [nw], roles=("approver", "requester"), limit="500")
    mine = [_item(make_item, nw, f"Bulk {n}", p["requester"], amount="100.00") for n in range(3)]
    own = _item(make_item, nw, "Requested by the approver", small, amount="100.00")
    too_big = _item(make_item, nw, "Too big", p["requester"], amount="900.00")
    auth.login("small@x.test")
    response = _bulk(client, auth, "unassigned", [i.id for i in mine] + [own.id, too_big.id],
                     "approve")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).text
    assert "3 items were approved" in page
    assert f"#{own.id} Requested by the approver: not approved: You requested this item" in page
    assert f"#{too_big.id} Too big: not approved: Your approval limit" in page
    db.session.expire_all()
    states = {i.id: db.session.get(WorkItem, i.id).state for i in mine + [own, too_big]}
    assert [states[i.id] for i in mine] == ["approved"] * 3
    assert states[own.id] == states[too_big.id] == "pending"
    bulk_events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "queue.bulk_action")).all()
    assert len(bulk_events) == 1


def test_bulk_over_htmx_answers_the_results_and_counts_out_of_band(world, make_item, client,
                                                                    auth):
    nw, co, p = world
    items = [_item(make_item, nw, f"Claim me {n}", p["requester"]) for n in range(2)]
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")
    response = client.post("/queues/unassigned/bulk", headers={"HX-Request": "true",
                                                               "X-CSRFToken": token},
                           data={"action": "claim", "selected_ids": [i.id for i in items],
                                 "queue": "unassigned", "filters": ""})
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="queue-results">')
    assert 'id="queue-counts"' in response.text and 'hx-swap-oob="true"' in response.text
    assert "2 items were claimed" in response.text
    assert _titles(response.text) == []  # both left Unassigned


def test_bulk_reassign_is_for_managers_only(world, make_item, client, auth):
    nw, co, p = world
    item = _item(make_item, nw, "Reassign me", p["requester"])
    auth.login("approver@x.test")
    _bulk(client, auth, "unassigned", [item.id], "reassign", assignee_id=str(p["approver"].id))
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).assignee_id is None
    auth.login("manager@x.test")
    _bulk(client, auth, "team", [item.id], "reassign", assignee_id=str(p["approver"].id))
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).assignee_id == p["approver"].id


def test_acting_in_the_pane_removes_the_row_that_left_and_refreshes_counts(
        world, make_item, client, auth):
    nw, co, p = world
    item = _item(make_item, nw, "Pane item", p["requester"])
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")
    pane = client.get(f"/items/{item.id}?queue=unassigned&q=pane", headers={"HX-Request": "true"})
    assert 'name="queue" value="unassigned"' in pane.text
    assert 'name="filters" value="q=pane"' in pane.text
    response = client.post(f"/items/{item.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "claim", "queue": "unassigned", "filters": "q=pane"})
    assert response.status_code == 200
    assert f'<template><tr id="row-{item.id}" hx-swap-oob="delete">' in response.text
    assert 'data-queue="unassigned">0<' in response.text
    assert '"left": true' in response.headers["HX-Trigger"]
    # In My work the claimed item stays: its row is replaced, not removed.
    response = client.post(f"/items/{item.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "approve", "comment": "fine", "queue": "mine",
                                 "filters": ""})
    assert f'<template><tr id="row-{item.id}" hx-swap-oob="delete">' in response.text  # approved: gone


def test_a_refused_action_in_the_pane_says_why_in_the_message_area(world, make_item, client,
                                                                    auth):
    nw, co, p = world
    item = _item(make_item, nw, "Reject me", p["requester"])
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")
    response = client.post(f"/items/{item.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "reject", "comment": "", "queue": "unassigned",
                                 "filters": ""})
    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#messages"
    assert "Give a reason for rejecting." in response.text
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"


def test_a_version_conflict_says_when_in_the_tenants_time_not_utc(world, make_item, client,
                                                                   auth):
    from datetime import UTC, datetime

    from app.approvals.services import approve_step
    from app.actors import Actor
    from app.models import User

    nw, co, p = world
    item = _item(make_item, co, "Refund for Acme", p["requester"])
    stale = item.version
    first = db.session.scalars(select(User).where(User.email == "approver.contoso@x.test")).one()
    approve_step(Actor.for_user(first), item.id)
    commit()
    arrange(item, last_action_at=datetime(2026, 7, 1, 12, 5, tzinfo=UTC))
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")

    response = client.post(f"/items/{item.id}/act",
                           headers={"HX-Request": "true", "X-CSRFToken": token},
                           data={"action": "approve", "comment": "", "version": str(stale),
                                 "queue": "unassigned", "filters": ""})

    assert "2026-07-01 14:05 CEST" in response.text  # Berlin, summer time
    assert "UTC" not in response.text


def test_saved_views_are_personal(world, client, auth):
    nw, co, p = world
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")
    response = client.post("/queues/unassigned/views", data={
        "csrf_token": token, "name": "Big EMEA", "queue": "unassigned",
        "filters": "min_amount=10000&region=EMEA"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/queues/unassigned?min_amount=10000&region=EMEA")
    assert "Big EMEA" in client.get("/queues/mine").text
    view = db.session.scalars(select(SavedView)).one()
    auth.login("manager@x.test")
    assert "Big EMEA" not in client.get("/queues/mine").text
    token = auth.csrf("/queues/mine")
    assert client.post(f"/queues/views/{view.id}/delete",
                       data={"csrf_token": token}).status_code == 404
    assert db.session.scalar(select(func.count()).select_from(SavedView)) == 1


def test_a_filter_change_answers_its_results_without_reading_the_side_bars_saved_views(
        world, make_item, client, auth):
    nw, co, p = world
    _item(make_item, nw, "Big deal for Initech", p["requester"], amount="20000.00")
    auth.login("approver@x.test")
    token = auth.csrf("/queues/unassigned")
    client.post("/queues/unassigned/views", data={
        "csrf_token": token, "name": "Big ones", "queue": "unassigned",
        "filters": "min_amount=10000"})
    answers = []
    statements = statements_sent(lambda: answers.append(client.get(
        "/queues/unassigned?min_amount=10000",
        headers={"HX-Request": "true", "HX-Target": "queue-results"})))
    assert answers[0].status_code == 200
    assert _titles(answers[0].text) == ["Big deal for Initech"]
    assert 'id="queue-results"' in answers[0].text and "Big ones" not in answers[0].text
    assert not [s for s in statements if "saved_views" in s]
    page = []
    statements = statements_sent(lambda: page.append(client.get("/queues/unassigned")))
    assert "Big ones" in page[0].text  # the whole page's side bar lists them
    assert [s for s in statements if "saved_views" in s]


def test_a_signed_in_page_reads_the_persons_memberships_and_roles_with_the_session(
        world, client, auth):
    auth.login("approver@x.test")
    statements = statements_sent(lambda: client.get("/queues/unassigned"))
    alone = [s for s in statements
             if re.match(r"\s*SELECT memberships\..*\sWHERE memberships\.user_id = ", s, re.S)
             or re.match(r"\s*SELECT membership_roles\.", s)]
    assert alone == []  # joined into the session's one statement, not fetched on first use
    assert "Approvals" in client.get("/queues/unassigned").text  # and the roles are right


def test_team_queue_is_for_managers(world, make_item, client, auth):
    nw, co, p = world
    _item(make_item, nw, "Team item", p["requester"])
    auth.login("approver@x.test")
    assert client.get("/queues/team").status_code == 403
    auth.login("manager@x.test")
    assert _titles(client.get("/queues/team").text) == ["Team item"]


@pytest.mark.parametrize("url", [
    "/queues/mine", "/queues/unassigned", "/queues/approvals",
    "/queues/unassigned?tenant={nw}", "/queues/approvals?q=Northwind",
    "/queues/unassigned?after={cursor}", "/items/{item}?queue=unassigned",
])
def test_contoso_only_approver_never_sees_northwind_work(world, make_item, client, auth, url):
    nw, co, p = world
    secret = _item(make_item, nw, "Northwind secret deal", p["requester"], amount="4321.00")
    from app.queues.filters import QueueFilters

    cursor = QueueFilters().cursor_for(secret)
    auth.login("approver.contoso@x.test")
    response = client.get(url.format(nw=nw.id, item=secret.id, cursor=cursor))
    assert response.status_code in (200, 404)
    assert "Northwind secret deal" not in response.text
    assert "4,321.00" not in response.text


def test_contoso_only_approver_cannot_act_on_northwind_items_by_bulk(world, make_item, client,
                                                                     auth):
    nw, co, p = world
    secret = _item(make_item, nw, "Northwind secret deal", p["requester"])
    auth.login("approver.contoso@x.test")
    response = _bulk(client, auth, "unassigned", [secret.id], "approve")
    page = client.get(response.headers["Location"]).text
    assert f"#{secret.id} : not approved: No such item." in page
    assert "Northwind secret deal" not in page
    db.session.expire_all()
    assert db.session.get(WorkItem, secret.id).state == "pending"
    assert db.session.get(WorkItem, secret.id).amount == Decimal("1000.00")


def test_a_manager_reassigns_from_the_item_panel(world, make_item, client, auth):
    nw, co, p = world
    item = _item(make_item, nw, "Hand this over", p["requester"])
    auth.login("approver@x.test")
    assert 'data-action="reassign"' not in client.get(f"/items/{item.id}").text
    auth.login("manager@x.test")
    page = client.get(f"/items/{item.id}").text
    assert 'data-action="reassign"' in page and "Approver" in page
    token = csrf_from(page)
    client.post(f"/items/{item.id}/act", data={"csrf_token": token, "action": "reassign",
                                               "assignee_id": p["approver"].id})
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).assignee_id == p["approver"].id
    # An analyst does not work approvals: refused, nothing changes.
    client.post(f"/items/{item.id}/act", data={"csrf_token": token, "action": "reassign",
                                               "assignee_id": p["analyst"].id})
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).assignee_id == p["approver"].id


def test_a_bulk_action_refused_for_every_item_changes_nothing_not_even_the_log(
        world, make_item, client, auth):
    nw, co, p = world
    item = _item(make_item, nw, "Not yours to approve", p["requester"])
    auth.login("req@x.test")  # a requester: may not approve anything, least of all their own
    events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = _bulk(client, auth, "mine", [item.id], "approve")
    page = client.get(response.headers["Location"]).text
    assert "not approved" in page
    db.session.expire_all()
    assert db.session.get(WorkItem, item.id).state == "pending"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    assert client.post("/queues/unknown/bulk", data={
        "csrf_token": auth.csrf("/queues/mine"), "action": "approve",
        "selected_ids": [item.id]}).status_code == 404


def test_only_admins_see_the_admin_link_and_the_sent_mail_link_under_it(world, make_user,
                                                                      client, auth):
    nw, co, p = world
    make_user("admin@x.test", [nw], roles=("admin",))
    auth.login("approver@x.test")
    assert 'href="/admin/"' not in client.get("/queues/mine").text
    assert client.get("/admin/").status_code == 403
    auth.login("admin@x.test")
    assert 'href="/admin/"' in client.get("/queues/mine").text
    assert 'href="/admin/mail/"' in client.get("/admin/").text


def test_bulk_approve_says_which_items_only_had_a_step_approved(world, make_item, client, auth):
    nw, co, p = world
    one_step = _item(make_item, nw, "Small one", p["requester"], amount="100.00")
    two_steps = _item(make_item, nw, "Large one", p["requester"], amount="60000.00")
    assert len(two_steps.steps) == 2
    auth.login("approver@x.test")
    response = _bulk(client, auth, "unassigned", [one_step.id, two_steps.id], "approve")
    page = client.get(response.headers["Location"]).text
    assert "1 item was approved." in page
    assert "2 items were approved" not in page
    assert (f"Step 1 of 2 of {two_steps.external_ref} approved — now waiting on a manager."
            in page)
    db.session.expire_all()
    assert db.session.get(WorkItem, two_steps.id).state == "pending"


def test_the_pane_shows_the_newest_events_of_a_long_argued_item_and_says_so(
        world, make_item, client, auth):
    from app.items.views import TIMELINE_LIMIT
    from app.work.services import add_comment
    from tests.conftest import actor

    nw, co, p = world
    item = _item(make_item, nw, "Argued for months", p["requester"])
    for n in range(TIMELINE_LIMIT + 5):
        add_comment(actor(p["analyst"]), item.id, f"Note number {n}")
    commit()
    auth.login("approver@x.test")
    page = client.get(f"/items/{item.id}").text
    assert f"Showing the newest {TIMELINE_LIMIT} events" in page
    assert f"Note number {TIMELINE_LIMIT + 4}<" in page  # the newest is there
    assert "Note number 0<" not in page  # the oldest is in the audit trail only
    assert page.count('class="action"') == TIMELINE_LIMIT
