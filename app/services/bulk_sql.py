"""Set-based writes: many rows in one statement with one parameter (a JSON array).

`jsonb_to_recordset` turns the array into typed rows inside PostgreSQL, so a 500-row write costs one
round trip and no per-row statement compilation or bind processing in Python.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.extensions import rowcount

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
