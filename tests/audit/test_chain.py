"""The hash chain: valid as written, and every kind of tampering is found and named."""
import pytest
from sqlalchemy import select, text

from app.audit.chain import event_hash
from app.audit.models import AuditEvent
from app.audit.services import verify_all, verify_chain
from app.extensions import db
from app.unit_of_work import commit
from app.work.services import add_comment
from tests.conftest import SYSTEM


@pytest.fixture
def chain(make_tenant, make_item):
    tenant = make_tenant()
    item = make_item(tenant)
    for i in range(6):
        add_comment(SYSTEM, item.id, f"comment {i}")
        commit()
    return tenant


def _sql(statement, **params):
    db.session.execute(text(statement), params)
    db.session.commit()


def test_a_written_chain_verifies(chain):
    report = verify_chain(chain.id)
    assert report.ok and report.events == 7
    assert all(r.ok for r in verify_all())


def test_each_event_links_to_the_previous_hash(chain):
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.chain_id == chain.id)
                                .order_by(AuditEvent.seq)).all()
    assert [e.seq for e in events] == list(range(1, 8))
    for previous, current in zip(events, events[1:]):
        assert current.prev_hash == previous.hash


def test_an_edited_event_is_named(chain, without_audit_triggers):
    _sql("UPDATE audit_events SET comment = 'nothing to see' WHERE chain_id = :c AND seq = 4",
         c=chain.id)
    report = verify_chain(chain.id)
    assert not report.ok and report.bad_seq == 4
    assert "event #4 was edited" in report.problem


def test_a_deleted_event_is_named(chain, without_audit_triggers):
    _sql("DELETE FROM audit_events WHERE chain_id = :c AND seq = 3", c=chain.id)
    report = verify_chain(chain.id)
    assert not report.ok and report.bad_seq == 3
    assert "event #3 is missing: deleted" in report.problem


def test_reordered_events_are_named(chain, without_audit_triggers):
    _sql("UPDATE audit_events SET seq = -1 WHERE chain_id = :c AND seq = 3", c=chain.id)
    _sql("UPDATE audit_events SET seq = 3 WHERE chain_id = :c AND seq = 5", c=chain.id)
    _sql("UPDATE audit_events SET seq = 5 WHERE chain_id = :c AND seq = -1", c=chain.id)
    report = verify_chain(chain.id)
    assert not report.ok and report.bad_seq == 3
    assert "event #3 was #5: events were reordered" in report.problem


def test_an_inserted_event_is_named(chain, without_audit_triggers):
    # A forger shifts the later events up and slips a well-formed event in at #4.
    last = db.session.scalar(select(AuditEvent).where(AuditEvent.chain_id == chain.id,
                                                      AuditEvent.seq == 3))
    _sql("UPDATE audit_events SET seq = seq + 100 WHERE chain_id = :c AND seq >= 4", c=chain.id)
    _sql("UPDATE audit_events SET seq = seq - 99 WHERE chain_id = :c AND seq >= 104", c=chain.id)
    fields = {name: getattr(last, name) for name in (
        "chain_id", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
        "on_behalf_of_id", "item_id", "from_state", "to_state", "data")}
    fields.update(seq=4, action="item.commented", comment="forged", prev_hash=last.hash)
    fields["hash"] = event_hash(fields)
    db.session.add(AuditEvent(**fields))
    db.session.commit()
    report = verify_chain(chain.id)
    assert not report.ok and report.bad_seq == 5
    assert "event #5 was #4: an event was inserted before it" in report.problem


def test_an_event_with_a_repeated_sequence_number_is_named(chain, without_audit_triggers):
    if db.engine.dialect.name == "postgresql" or db.engine.dialect.name == "sqlite":
        # The unique (chain, seq) constraint already refuses it; drop it as a forger would.
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit_events DROP CONSTRAINT uq_audit_events_chain_id_seq"))
            else:
                pytest.skip("SQLite cannot drop a table constraint without rebuilding the table")
    try:
        original = db.session.scalar(select(AuditEvent).where(AuditEvent.chain_id == chain.id,
                                                              AuditEvent.seq == 2))
        copy = {c.name: getattr(original, c.name) for c in AuditEvent.__table__.columns
                if c.name != "id"}
        copy["comment"] = "inserted"
        db.session.add(AuditEvent(**copy))
        db.session.commit()
        report = verify_chain(chain.id)
        assert not report.ok and "repeats a sequence number: an event was inserted" in report.problem
    finally:
        db.session.rollback()
        _sql("DELETE FROM audit_events WHERE comment = 'inserted'")
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events ADD CONSTRAINT "
                              "uq_audit_events_chain_id_seq UNIQUE (chain_id, seq)"))


def test_events_cut_off_the_end_are_detected_against_the_head(chain, without_audit_triggers):
    _sql("DELETE FROM audit_events WHERE chain_id = :c AND seq >= 6", c=chain.id)
    report = verify_chain(chain.id)
    assert not report.ok and report.bad_seq == 6
    assert "events were cut off the end" in report.problem


def test_audit_verify_command_exits_non_zero_naming_the_event(chain, runner,
                                                            without_audit_triggers):
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    _sql("UPDATE audit_events SET actor_label = 'someone else' WHERE chain_id = :c AND seq = 2",
         c=chain.id)
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1
    assert "event #2 was edited" in broken.output
