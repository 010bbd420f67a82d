"""Server-side prepared statements for the few reads every request makes, for the send engine's
settle-and-claim statement, which every sender runs a few messages at a time, and for the statements
every event batch runs (its claim, identity lookup and activity insert, the orders credited, the
flows entered).

psycopg2 sends each statement as text, so PostgreSQL parses and plans it on every call; for a
three-table lookup that planning is a large share of the round trip (for the send engine's
statement of a dozen CTEs, planning took three times as long as running it). A PreparedStatement is
compiled once from a Core/ORM select or a textual statement, PREPAREd once per database connection (remembered in the
pool's per-connection `info`, which SQLAlchemy clears whenever it reconnects) and then only
EXECUTEd — with the select's own bind and result types, so ORM loading works unchanged. A statement
no longer needed is released: each connection that holds it DEALLOCATEs it the next time it prepares.
A statement built afresh from data (a flow's) can have its constants written into its text: each
EXECUTE then carries only the values its callers pass, and PostgreSQL plans it knowing the rest.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg2 as pg_psycopg2

# `$1`-style placeholders are what PREPARE takes; a name used twice becomes one parameter.
_DOLLAR_DIALECT = pg_psycopg2.dialect(paramstyle="numeric_dollar")
_PREPARED_KEY = "herald_prepared_statements"
_RELEASED: set[str] = set()  # names released in this process (never reused)


class _Compiler(_DOLLAR_DIALECT.statement_compiler):  # type: ignore[name-defined]
    """`$n` parameters for PREPARE, which has no list parameter: an IN list of values the statement
    carries is written into its text. With `inline_constants`, so is every value it carries, typed
    as its bind; named parameters (those callers pass) stay parameters."""

    inline_constants = False

    def visit_bindparam(self, bindparam: sa.BindParameter, **kw: Any) -> str:
        if bindparam.required or kw.get("literal_binds"):
            return super().visit_bindparam(bindparam, **kw)
        if bindparam.expanding:
            return super().visit_bindparam(bindparam, **{**kw, "literal_binds": True})
        if not self.inline_constants:
            return super().visit_bindparam(bindparam, **kw)
        value = bindparam.effective_value
        literal = "NULL" if value is None else self.render_literal_value(value, bindparam.type)
        type_ = _parameter_type(bindparam.type)
        return literal if type_ == "unknown" else f"CAST({literal} AS {type_})"


class _ConstantsInline(_Compiler):
    inline_constants = True


class PreparedStatement:
    def __init__(self, name: str, statement: sa.Select | sa.TextClause | sa.Update,
                 inline_constants: bool = False) -> None:
        compiled = (_ConstantsInline if inline_constants else _Compiler)(_DOLLAR_DIALECT, statement)
        params = list(dict.fromkeys(compiled.positiontup or ()))
        self.name = name
        self.source = statement  # as written, e.g. to compare it with a variant of its own
        # Each parameter declared with its bind's type (a constant's too: `0` inserted into a
        # smallint column); untyped ones are inferred by PostgreSQL from where they are used.
        types = ", ".join(_parameter_type(compiled.binds[param].type) for param in params)
        self._prepare_sql = f"PREPARE {name}{f' ({types})' if types else ''} AS {compiled.string}"
        placeholders = ", ".join(f":{param}" for param in params)
        # Typed binds and typed result columns: UUIDs go in and come out as the select's would (a
        # textual statement's parameters take the types PostgreSQL infers where they are used).
        execute = sa.text(f"EXECUTE {name}({placeholders})" if params else f"EXECUTE {name}").bindparams(
            *(_execute_bind(param, compiled.binds[param]) for param in params))
        self.statement = execute.columns(*map(_result_column, statement.selected_columns)) \
            if isinstance(statement, sa.Select) else execute

    def execute_in(self, session: Any, engine: sa.Engine, params: dict[str, Any], statement: Any = None) -> Any:
        """Prepare it on the connection `session` uses for `engine` if need be, and EXECUTE it there
        (or `statement`, one built on `.statement`, such as an ORM select from it); the result."""
        # A dict of its own: Session.connection() pops "bind" from the one it is given.
        self.prepare_on(session.connection(bind_arguments={"bind": engine}))
        return session.execute(self.statement if statement is None else statement, params,
                               bind_arguments={"bind": engine})

    def prepare_on(self, connection: sa.Connection) -> None:
        """PREPARE on this connection unless it already holds the statement."""
        prepared: set[str] = connection.info.setdefault(_PREPARED_KEY, set())
        if self.name not in prepared:
            for name in prepared & _RELEASED:
                connection.exec_driver_sql(f"DEALLOCATE {name}")
            prepared -= _RELEASED
            connection.exec_driver_sql(self._prepare_sql.replace("%", "%%"))  # the driver formats it
            prepared.add(self.name)

    def release(self) -> None:
        """No longer needed: connections drop it when they next prepare one (it is not run again)."""
        _RELEASED.add(self.name)


def _execute_bind(name: str, bind: sa.BindParameter) -> sa.BindParameter:
    # A value the select itself carries (a LIMIT, a constant) travels along; named ones stay required.
    if bind.required:
        return sa.bindparam(name, type_=bind.type)
    return sa.bindparam(name, bind.effective_value, type_=bind.type)


# Binds with no SQL type of their own (a JSON key or path is text or text[] where it is used).
_INFERRED = (sa.types.NullType, sa.JSON.JSONIndexType, sa.JSON.JSONPathType)


def _parameter_type(type_: Any) -> str:
    return "unknown" if isinstance(type_, _INFERRED) else type_.compile(dialect=_DOLLAR_DIALECT)


def _result_column(column: Any) -> Any:
    # A table's column as itself (ORM loading matches it); an expression by its name and type alone,
    # without the binds inside it (the EXECUTE passes those).
    return column if isinstance(column, sa.Column) else sa.column(column.name, column.type)
