"""The hash of an audit event: one canonical encoding, used to write and to verify."""
from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from enum import Enum

HASHED_FIELDS = (
    "chain_id", "seq", "tenant_id", "occurred_at", "actor_type", "actor_id", "actor_label",
    "on_behalf_of_id", "action", "item_id", "from_state", "to_state", "comment", "data",
    "prev_hash",
)


def jsonable(value):
    """Turn event data into plain JSON values, so what is stored is exactly what was hashed."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        raise TypeError("floats are not allowed in audit data; use Decimal or str")
    return str(value)


def event_hash(fields: dict) -> str:
    payload = {name: fields[name] for name in HASHED_FIELDS}
    occurred = payload["occurred_at"]
    if isinstance(occurred, datetime):
        payload["occurred_at"] = occurred.isoformat()
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
