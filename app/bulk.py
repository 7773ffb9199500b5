"""Writing many rows of one table in the caller's transaction: COPY on PostgreSQL (ids drawn
from the table's sequence first, when the caller needs them), a multi-row INSERT elsewhere."""
from __future__ import annotations

import json

from sqlalchemy import JSON, insert, text

from app.extensions import db


def insert_rows(table, rows: list[dict], *, with_ids: bool = False) -> list[int]:
    """Insert `rows` (every column a row needs, server-side defaults aside); return their new
    ids, in order, if `with_ids`."""
    if not rows:
        return []
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        if with_ids:
            return list(db.session.scalars(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
        db.session.execute(insert(table), rows)
        return []
    ids: list[int] = []
    if with_ids:
        ids = list(connection.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) "
                 "FROM generate_series(1, :n)"), {"t": table.name, "n": len(rows)}).scalars())
        rows = [dict(row, id=new_id) for row, new_id in zip(rows, ids)]
    columns = list(rows[0])
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row[c]) if c in json_columns and row[c] is not None
                                else row[c] for c in columns])
    return ids
