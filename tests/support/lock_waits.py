"""Waiting, in a test, until another transaction of the test is blocked on a lock."""
from __future__ import annotations

import time

import sqlalchemy as sa

from app.extensions import db

_WAITING = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    " AND (CAST(:event AS text) IS NULL OR wait_event = :event)"
)


def until_a_transaction_waits(event: str | None = None, timeout: float = 30) -> None:
    """Return once some session of the test database waits on a lock (`event`: only that kind, e.g.
    `advisory`); fail after `timeout` seconds. Needs an app context."""
    deadline = time.monotonic() + timeout
    while not db.session.scalar(_WAITING, {"event": event}):
        db.session.rollback()
        assert time.monotonic() < deadline, "no transaction ever waited on a lock"
        time.sleep(0.05)
    db.session.rollback()
