"""Set-based writes: many rows in one statement with one parameter (a JSON array).

`jsonb_to_recordset` turns the array into typed rows inside PostgreSQL, so a 500-row write costs one
round trip and no per-row statement compilation or bind processing in Python.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.extensions import db, rowcount
from app.services.prepared_statements import PreparedStatement

_DIALECT = postgresql.dialect()


def to_json(rows: list[dict[str, Any]]) -> str:
    # orjson writes UUIDs and naive datetimes (ISO 8601) as PostgreSQL reads them back.
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


def array_literal(values: Iterable[Any]) -> str:
    """Many values (ids: no commas, quotes or braces) as one array parameter, `{a,b}`, to CAST to an
    array type: PostgreSQL reads it in one go, where a list's ARRAY['a', 'b'] is lexed item by item."""
    return "{" + ",".join(map(str, values)) + "}"


@lru_cache(maxsize=64)
def _recordset(table: sa.Table, columns: tuple[str, ...]) -> str:
    types = ", ".join(f'"{c}" {table.c[c].type.compile(dialect=_DIALECT)}' for c in columns)
    return f"jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({types})"


@lru_cache(maxsize=64)
def _insert_sql(table: sa.Table, columns: tuple[str, ...], on_conflict: str) -> sa.TextClause:
    names = ", ".join(f'"{c}"' for c in columns)
    return sa.text(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {_recordset(table, columns)} {on_conflict}')


@lru_cache(maxsize=64)
def _update_sql(table: sa.Table, columns: tuple[str, ...], key: str, touch: str | None) -> sa.TextClause:
    assignments = [f'"{c}" = r."{c}"' for c in columns if c != key]
    if touch:
        assignments.append(f'"{touch}" = now()')
    return sa.text(
        f'UPDATE "{table.name}" AS t SET {", ".join(assignments)} '
        f'FROM {_recordset(table, columns)} WHERE t."{key}" = r."{key}"'
    )


def insert_rows(session, table: sa.Table, rows: list[dict[str, Any]], on_conflict: str = "") -> int:
    """INSERT every row (all with the same keys = column names); the number inserted."""
    if not rows:
        return 0
    statement = _insert_sql(table, tuple(rows[0]), on_conflict)
    return rowcount(session.execute(statement, {"rows": to_json(rows)}))


@lru_cache(maxsize=16)
def _insert_located(table: sa.Table, columns: tuple[str, ...], on_conflict: str,
                    group: tuple[str, ...]) -> PreparedStatement:
    keys = ", ".join(f'"{c}"' for c in group)
    sql = (f"WITH written AS ({_insert_sql(table, columns, on_conflict).text} RETURNING ctid, {keys}) "
           f"SELECT {keys}, count(*), CAST(array_agg(ctid) AS text) FROM written GROUP BY {keys}")
    # Named after what it does: the same statement has the same name in every process.
    return PreparedStatement(f"herald_located_{table.name}_{hashlib.sha1(sql.encode()).hexdigest()[:12]}",
                             sa.text(sql))


def insert_located(session, table: sa.Table, rows: list[dict[str, Any]], group: tuple[str, ...],
                   on_conflict: str = "") -> dict[tuple[Any, ...], tuple[int, str]]:
    """INSERT every row, as insert_rows; for each value of the `group` columns among the rows
    inserted, how many and where: their ctids (physical row ids), as one `tid[]` literal to read
    them back by with a TID scan, no index probe per row. A ctid names the row version this
    statement wrote: it is valid for as long as the caller's transaction, whose uncommitted rows
    no other can change, neither updates nor deletes them. Prepared: a batch's writer runs it with
    every batch."""
    if not rows:
        return {}
    statement = _insert_located(table, tuple(rows[0]), on_conflict, group)
    written = statement.execute_in(session, db.engine, {"rows": to_json(rows)})
    return {tuple(row[:-2]): (row[-2], row[-1]) for row in written}


def concatenated(literals: Iterable[str]) -> str:
    """Array literals, as PostgreSQL writes them (`{a,b}`), as one."""
    return "{" + ",".join(items for literal in literals if (items := literal[1:-1])) + "}"


def insert_returning(session, table: sa.Table, rows: list[dict[str, Any]], on_conflict: str = "",
                     returning: str = "id") -> list[Any]:
    """INSERT every row, as insert_rows; the `returning` column of each row inserted."""
    if not rows:
        return []
    statement = _insert_sql(table, tuple(rows[0]), f'{on_conflict} RETURNING "{returning}"')
    return list(session.scalars(statement, {"rows": to_json(rows)}))


def update_rows(session, table: sa.Table, rows: list[dict[str, Any]], key: str = "id",
                touch: str | None = "updatedAt") -> int:
    """UPDATE the rows matched by `key` to the given column values (and `touch` = now())."""
    if not rows:
        return 0
    statement = _update_sql(table, tuple(rows[0]), key, touch)
    return rowcount(session.execute(statement, {"rows": to_json(rows)}))
