"""One unit of work: commit what the block wrote, or roll all of it back when it fails."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from app.extensions import db


@contextmanager
def transaction() -> Iterator[None]:
    try:
        yield
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()


@contextmanager
def snapshot() -> Iterator[None]:
    """A read-only unit of work whose reads all see one snapshot (REPEATABLE READ). PostgreSQL fixes a
    transaction's isolation before its first query, so inside one already begun the block reads that
    transaction's own view instead."""
    with transaction():
        raw = db.session.connection().connection.dbapi_connection
        if raw is not None and raw.info.transaction_status == TRANSACTION_STATUS_IDLE:
            db.session.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        yield
