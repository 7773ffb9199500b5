"""The hash chain: valid as written, and every kind of tampering is found and named."""
import hashlib
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.audit.chain import (
    HASHED_FIELDS,
    LINK_JOIN,
    encoding_around_link,
    event_hash,
    values_hash,
)
from app.audit.models import AuditAlert, AuditEvent
from app.audit.services import anchor_all, latest_anchor, verify_all, verify_chain
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
    commit()


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
    commit()
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
        commit()
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


# ---------------------------------------------------------------------------------------------
# The hashing the verifier uses is event_hash, written out.

_text = st.one_of(st.none(), st.text(max_size=40))
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(chain_id=st.integers(0, 10**6), seq=st.integers(1, 10**12),
       tenant_id=st.one_of(st.none(), st.integers(1, 10**6)),
       occurred_at=st.datetimes(timezones=st.just(UTC)),
       actor_type=st.sampled_from(["user", "email_link", "policy", "api", "system"]),
       actor_id=st.one_of(st.none(), st.integers(1, 10**9)), actor_label=st.text(max_size=60),
       on_behalf_of_id=st.one_of(st.none(), st.integers(1, 10**9)), action=st.text(max_size=30),
       item_id=st.one_of(st.none(), st.integers(1, 10**12)), from_state=_text, to_state=_text,
       comment=_text, data=st.dictionaries(st.text(max_size=12), _json, max_size=6),
       prev_hash=st.text("0123456789abcdef", min_size=64, max_size=64))
def test_the_verifiers_hash_is_event_hash_for_any_event(**fields):
    assert values_hash(*(fields[name] for name in HASHED_FIELDS)) == event_hash(fields)
    # The database finishes a single event's hash from the encoding cut around its link.
    before, after = encoding_around_link(fields)
    linked = f"{before}{fields['prev_hash']}{LINK_JOIN}{fields['seq']}{after}"
    assert hashlib.sha256(linked.encode("utf-8")).hexdigest() == event_hash(fields)


# ---------------------------------------------------------------------------------------------
# Immutability: the database itself refuses to change or remove an audit row.


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET comment = 'changed' WHERE seq = 2",
    "DELETE FROM audit_events WHERE seq = 2",
    "DELETE FROM audit_events",
    "UPDATE audit_anchors SET hash = 'x'",
    "DELETE FROM audit_anchors",
], ids=["update-event", "delete-event", "delete-all-events", "update-anchor", "delete-anchor"])
def test_sql_cannot_change_or_remove_audit_rows(chain, statement):
    chain_id = chain.id
    anchor_all()
    commit()
    db.session.close()
    before = _rows()
    with pytest.raises(DBAPIError, match="append-only"):
        with db.engine.begin() as conn:
            conn.execute(text(statement))
    assert _rows() == before
    assert verify_chain(chain_id).ok


@pytest.mark.parametrize("table", ["audit_events", "audit_anchors"])
def test_truncate_of_audit_rows_is_refused_on_postgresql(chain, table):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    anchor_all()
    commit()
    db.session.close()  # hold no lock on the table while TRUNCATE asks for it
    before = _rows()
    with pytest.raises(DBAPIError, match="append-only: TRUNCATE refused"):
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    assert _rows() == before


def _rows():
    """Every audit row, read in a transaction of its own (no lock kept afterwards)."""
    with db.engine.connect() as conn:
        return (conn.execute(text("SELECT * FROM audit_events ORDER BY id")).all(),
                conn.execute(text("SELECT * FROM audit_anchors ORDER BY id")).all())


# ---------------------------------------------------------------------------------------------
# Anchors: how far a chain verified, kept where the head cannot rewind it.


def test_anchoring_records_the_verified_length_and_hash_of_each_chain(chain):
    reports = anchor_all()
    commit()
    anchor = latest_anchor(chain.id)
    last = db.session.scalar(select(AuditEvent).where(AuditEvent.chain_id == chain.id,
                                                      AuditEvent.seq == 7))
    assert all(r.ok for r in reports)
    assert (anchor.seq, anchor.hash) == (7, last.hash)


def test_a_cut_off_tail_is_detected_against_the_anchor_even_with_the_head_rewound(
        chain, without_audit_triggers):
    anchor_all()
    commit()
    five = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.chain_id == chain.id,
                                                           AuditEvent.seq == 5))
    _sql("DELETE FROM audit_events WHERE chain_id = :c AND seq > 5", c=chain.id)
    _sql("UPDATE audit_chain_heads SET last_seq = 5, last_hash = :h WHERE chain_id = :c",
         c=chain.id, h=five)

    report = verify_chain(chain.id)

    assert not report.ok and report.bad_seq == 6
    assert report.problem.startswith(
        "the chain ends at #5 but it was anchored at #7 on ")
    assert report.problem.endswith(": events were cut off the end")


def test_a_chain_rewritten_and_rehashed_up_to_its_anchor_is_detected(chain,
                                                                      without_audit_triggers):
    anchor_all()
    commit()
    # A forger edits event #2 and recomputes every later hash and link, and the head: the
    # chain is consistent again, but no longer the one that was anchored.
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.chain_id == chain.id)
                                .order_by(AuditEvent.seq)).all()
    prev = events[0].hash
    for event in events[1:]:
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        fields["prev_hash"] = prev
        if event.seq == 2:
            fields["comment"] = "rewritten"
        prev = event_hash(fields)
        _sql("UPDATE audit_events SET comment = :comment, prev_hash = :p, hash = :h "
             "WHERE id = :id", comment=fields["comment"], p=fields["prev_hash"], h=prev,
             id=event.id)
    _sql("UPDATE audit_chain_heads SET last_hash = :h WHERE chain_id = :c", h=prev, c=chain.id)

    report = verify_chain(chain.id)

    assert not report.ok and report.bad_seq == 7
    assert "event #7 no longer has the hash anchored on " in report.problem
    assert report.problem.endswith("the chain was rewritten up to it")


def test_an_anchor_job_on_a_broken_chain_alerts_once_and_does_not_anchor(chain,
                                                                        without_audit_triggers):
    from app.audit.jobs import anchor_chains

    _sql("UPDATE audit_events SET comment = 'x' WHERE chain_id = :c AND seq = 3", c=chain.id)

    assert anchor_chains() == "anchored 0 chains, 1 broken"
    assert anchor_chains() == "anchored 0 chains, 1 broken"

    assert latest_anchor(chain.id) is None
    [alert] = db.session.scalars(select(AuditAlert)).all()
    assert alert.bad_seq == 3 and "event #3 was edited" in alert.problem
    failed = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "audit.verification_failed")).all()
    assert len(failed) == 1 and failed[0].data["alert_id"] == alert.id


def test_events_committed_during_a_verification_are_not_taken_for_forgeries(chain):
    # The walk stops at the head it read first; an event written since is beyond it.
    report_before = verify_chain(chain.id)
    add_comment(SYSTEM, db.session.scalar(select(AuditEvent.item_id).where(
        AuditEvent.chain_id == chain.id, AuditEvent.item_id.is_not(None))), "later")
    commit()
    assert report_before.ok and verify_chain(chain.id).ok
