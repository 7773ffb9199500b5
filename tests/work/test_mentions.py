"""@mentions: a comment that names a member mails them the comment and lets a requester-only
member open that item (and no other of the tenant); a mention of someone who is not a member
is refused with the address, and nothing is recorded."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.errors import NotFound, ValidationFailed
from app.extensions import db
from app.unit_of_work import commit
from app.work.mentions import ItemMention
from app.work.services import add_comment
from app.work.queries import get_item
from tests.approvals.conftest import inbox, relaying, run_worker, team  # noqa: F401 (fixtures)
from tests.conftest import actor


def test_a_mention_mails_the_member_and_opens_the_item_to_them(relaying, inbox, team, make_user,
                                                               make_item):
    cfo = make_user("cfo@x.test", [team["tenant"]], roles=("requester",), name="Cora CFO")
    item = make_item(team["tenant"], amount="5000.00", requester=team["requester"])
    other = make_item(team["tenant"], amount="10.00", requester=team["requester"])
    commit()
    with pytest.raises(NotFound):
        get_item(actor(cfo), item.id)
    add_comment(actor(team["approver"]), item.id, "@CFO@x.test can you confirm the budget?")
    commit()
    assert get_item(actor(cfo), item.id).id == item.id
    with pytest.raises(NotFound):
        get_item(actor(cfo), other.id)
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "item.commented")).one()
    assert event.data["mentioned"] == [cfo.id]
    run_worker(relaying)
    mails = [m for m in inbox.to("cfo@x.test") if "mentioned you" in m["Subject"]]
    assert len(mails) == 1 and "can you confirm the budget?" in inbox.text(mails[0])
    assert "Ann Approver mentioned you" in mails[0]["Subject"]


def test_a_mention_of_a_stranger_is_refused_by_name(team, make_item):
    item = make_item(team["tenant"], amount="50.00", requester=team["requester"])
    commit()
    with pytest.raises(ValidationFailed) as refused:
        add_comment(actor(team["approver"]), item.id, "cc @nobody@elsewhere.test")
    assert "nobody@elsewhere.test" in refused.value.fields["comment"]
    db.session.rollback()
    assert not db.session.scalars(select(ItemMention)).all()


def test_the_mention_list_offers_the_items_tenant_members_to_who_may_comment(
        team, make_user, make_item, make_tenant, auth, client):
    from app.errors import PermissionDenied
    from app.work.mentions import mention_candidates

    make_user("ann.other@y.test", [make_tenant("contoso")], roles=("approver",),
              name="Ann Elsewhere")
    auditor = make_user("aud@x.test", [team["tenant"]], roles=("auditor",), name="Aud Itor")
    gone = make_user("annie@x.test", [team["tenant"]], roles=("approver",), name="Annie Gone")
    gone.active = False
    commit()
    item = make_item(team["tenant"], amount="500.00", requester=team["requester"])
    names = [u.name for u in mention_candidates(actor(team["approver"]), item.id, "ann")]
    assert names == ["Ann Approver"]  # not another tenant's Ann, not a deactivated one
    by_email = mention_candidates(actor(team["requester"]), item.id, "MAX@")
    assert [u.email for u in by_email] == ["max@x.test"]
    assert len(mention_candidates(actor(team["approver"]), item.id, "")) == 5
    assert mention_candidates(actor(team["approver"]), item.id, "%") == []  # no wildcard
    with pytest.raises(PermissionDenied):
        mention_candidates(actor(auditor), item.id, "a")
    foreign = make_item(team["tenant"], amount="20.00")
    with pytest.raises(NotFound):  # a requester-only member not on the item
        mention_candidates(actor(team["requester"]), foreign.id, "a")

    auth.login("req@x.test")
    options = client.get(f"/items/{item.id}/mentions?q=ma", headers={"HX-Request": "true"})
    assert options.status_code == 200
    assert 'data-email="max@x.test"' in options.text and "<html" not in options.text
    assert client.get(f"/items/{foreign.id}/mentions?q=ma").status_code == 404
