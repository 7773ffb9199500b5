"""The hash of an audit event: one canonical encoding, used to write and to verify."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime

HASHED_FIELDS = (
    "chain_id", "seq", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
    "on_behalf_of_id", "action", "item_id", "from_state", "to_state", "comment", "data",
    "prev_hash",
)


def event_hash(fields: dict) -> str:
    payload = {name: fields[name] for name in HASHED_FIELDS}
    occurred = payload["occurred_at"]
    if isinstance(occurred, datetime):
        payload["occurred_at"] = occurred.isoformat()
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


# The same encoding as event_hash, written out for verifying millions of rows: no dict per
# event, one shared encoder, the keys in the order json.dumps(sort_keys=True) puts them. A
# property test holds it to event_hash for arbitrary events.
_string = json.encoder.encode_basestring  # what json.dumps uses with ensure_ascii=False
_data = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_sha256 = hashlib.sha256


def _text(value) -> str:
    return "null" if value is None else _string(value)


def _number(value) -> str:
    return "null" if value is None else int.__repr__(value)


def _encoding_around_link(chain_id, tenant_id, occurred_at, actor_type, actor_id, actor_label,
                          on_behalf_of_id, action, item_id, from_state, to_state, comment,
                          data) -> tuple[str, str]:
    """The canonical encoding of an event cut where its link goes: the text before the
    previous hash and the text after its sequence number. In sorted key order `prev_hash` and
    `seq` are neighbours, so the whole encoding is
    ``before + prev_hash + LINK_JOIN + str(seq) + after``."""
    if isinstance(occurred_at, datetime):
        occurred_at = occurred_at.isoformat()
    before = (
        f'{{"action":{_string(action)},"actor_id":{_number(actor_id)},'
        f'"actor_label":{_string(actor_label)},"actor_type":{_string(actor_type)},'
        f'"chain_id":{_number(chain_id)},"comment":{_text(comment)},"data":{_data(data)},'
        f'"from_state":{_text(from_state)},"item_id":{_number(item_id)},'
        f'"occurred_at":{_string(occurred_at)},"on_behalf_of_id":{_number(on_behalf_of_id)},'
        f'"prev_hash":"'
    )
    after = (f',"tenant_id":{_number(tenant_id)},"to_state":{_text(to_state)}}}')
    return before, after


LINK_JOIN = '","seq":'


def encoding_around_link(fields: dict) -> tuple[str, str]:
    """For the database to finish an event's hash once it knows the link (PostgreSQL links a
    single event in the statement that advances the chain's head): sha256 of
    ``before + prev_hash + LINK_JOIN + str(seq) + after`` is event_hash of the event."""
    return _encoding_around_link(
        fields["chain_id"], fields["tenant_id"], fields["occurred_at"], fields["actor_type"],
        fields["actor_id"], fields["actor_label"], fields["on_behalf_of_id"], fields["action"],
        fields["item_id"], fields["from_state"], fields["to_state"], fields["comment"],
        fields["data"])


def values_hash(chain_id, seq, tenant_id, occurred_at, actor_type, actor_id, actor_label,
                on_behalf_of_id, action, item_id, from_state, to_state, comment, data,
                prev_hash) -> str:
    """event_hash of these field values (occurred_at a datetime or its ISO string)."""
    before, after = _encoding_around_link(
        chain_id, tenant_id, occurred_at, actor_type, actor_id, actor_label, on_behalf_of_id,
        action, item_id, from_state, to_state, comment, data)
    # _string quotes (and would escape) the previous hash; `before` holds the opening quote.
    encoded = f"{before}{_string(prev_hash)[1:]}{LINK_JOIN[1:]}{_number(seq)}{after}"
    return _sha256(encoded.encode("utf-8")).hexdigest()
