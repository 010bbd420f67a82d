"""The bridge between the Flask app and Celery.

`celery_init_app` follows the Flask docs' pattern: every task runs inside the app context.
`enqueue_after_commit` is the only way services hand work to workers: the message is published
after the transaction that created the work commits (a message is only a hint; beat sweeps recover
anything lost), and never if it rolls back. Tasks are addressed by name so services never import
`workers`.
"""
from __future__ import annotations

import gc
import logging
from typing import Any

import redis
from celery import Celery, Task
from flask import Flask, current_app
from kombu.exceptions import OperationalError as BrokerUnreachable
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db, redis_client

_PENDING = "herald_pending_tasks"

log = logging.getLogger(__name__)


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object("celeryconfig")
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


# Workers allocate many short-lived objects per event and per message. With CPython's default first
# threshold (700 allocations) the collector runs every few events, and each run that reaches the
# older generations walks every long-lived object of the app. Collections every 50,000 allocations,
# with the app's import-time objects frozen out of them (and shared, untouched, by the forked
# children), made event processing about 1.4× faster (bench/flows.py).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what the process holds so far out of the collector's reach, and collect less often:
    in a worker's parent once the app is built (and in the benchmarks' own process)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def enqueue_after_commit(task_name: str, *args: Any, **options: Any) -> None:
    """Publish `task_name(*args)` once the current transaction commits (at once if none is open)."""
    celery_app: Celery = current_app.extensions["celery"]
    session = db.session()
    if not session.in_transaction():
        _publish(celery_app, task_name, args, options)
        return
    session.info.setdefault(_PENDING, []).append((celery_app, task_name, args, options))


@event.listens_for(Session, "after_commit")
def _publish_pending(session: Session) -> None:
    for celery_app, task_name, args, options in session.info.pop(_PENDING, []):
        _publish(celery_app, task_name, args, options)


def _publish(celery_app: Celery, task_name: str, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    # The broker is down (Celery has already retried): the work is committed and a beat sweep
    # picks it up once the broker is back, so the caller carries on rather than failing.
    try:
        celery_app.send_task(task_name, args=args, **options)
    except BrokerUnreachable as exc:
        log.warning("task not published, the broker is unreachable: %s: %s", task_name, exc)


def hint(task_name: str, window_ms: int, countdown: float | None = None) -> None:
    """Ask for `task_name` once the transaction commits, at most once per `window_ms` however many
    callers ask (the first of each window publishes): under load one message covers many requests.
    A hint is only that: one lost (Redis unreachable, a rollback) waits for beat's sweep, and the
    caller never fails on it."""
    try:
        first = redis_client().set(f"herald:hint:{task_name}", b"1", nx=True, px=window_ms)
    except redis.RedisError as exc:
        log.warning("%s not hinted, Redis is unreachable: %s", task_name, exc)
        return
    if first:
        enqueue_after_commit(task_name, **({"countdown": countdown} if countdown else {}))


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
