"""Writing many rows of one table in the caller's transaction: inserting them (COPY on
PostgreSQL, ids drawn from the table's sequence first when the caller needs them; a multi-row
INSERT elsewhere) and updating them each with its own values (one UPDATE on PostgreSQL)."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, bindparam, insert, literal_column, text, update

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


def update_rows(table, rows: list[dict], *, match: tuple[str, ...], fixed: dict | None = None,
                fixed_sql: dict[str, str] | None = None):
    """Update many rows, each with its own values (`rows`: column -> value, the `match`
    columns picking the row) plus the same `fixed` values. On PostgreSQL one statement
    whatever the number of rows (each column travels as one array, unnested; `fixed_sql` adds
    SQL expressions over the row, `t`); elsewhere an executemany."""
    if not rows:
        return
    fixed = fixed or {}
    names = list(rows[0])
    assigned = [n for n in names if n not in match]
    dialect = db.session.get_bind().dialect
    if dialect.name != "postgresql":
        extra = {n: literal_column(sql.replace("t.", f"{table.name}."))
                 for n, sql in (fixed_sql or {}).items()}
        db.session.execute(
            update(table).where(*[table.c[n] == bindparam(f"p_{n}") for n in match])
            .values(**{n: bindparam(f"p_{n}") for n in assigned}, **fixed, **extra),
            [{f"p_{n}": row[n] for n in names} for row in rows])
        return
    # The rows travel as one JSON document (json.dumps is C; binding a thousand-element array
    # per column made the driver inspect every element), typed by json_to_recordset.
    columns = ", ".join(
        f"{n} " + ("json" if isinstance(table.c[n].type, JSON)
                   else table.c[n].type.compile(dialect=dialect)) for n in names)
    params = {"rows": json.dumps(rows, default=_json_scalar)}
    for n, value in fixed.items():
        params[f"f_{n}"] = value
    sets = [f"{n} = v.{n}" for n in assigned]
    sets += [f"{n} = :f_{n}" for n in fixed]
    sets += [f"{n} = {sql}" for n, sql in (fixed_sql or {}).items()]
    where = " AND ".join(f"t.{n} = v.{n}" for n in match)
    db.session.execute(text(
        f"UPDATE {table.name} AS t SET {', '.join(sets)} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS v({columns}) WHERE {where}"), params)


def _json_scalar(value):
    """Money and times in update_rows' JSON: as the text PostgreSQL reads back exactly."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a batch update")
