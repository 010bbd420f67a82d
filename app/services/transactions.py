"""One unit of work: commit what the block wrote, or roll all of it back when it fails."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.extensions import db


@contextmanager
def transaction() -> Iterator[None]:
    try:
        yield
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()
