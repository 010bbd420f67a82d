"""The Celery application, bound to Herald's Flask app (`celery -A workers worker|beat|flower`)."""
import gc

from celery.signals import worker_process_init

from app import create_app
from app.extensions import db

flask_app = create_app()
celery = flask_app.extensions["celery"]

# Workers allocate many short-lived objects per event and per message. With CPython's default first
# threshold (700 allocations) the collector runs every few events, and each run that reaches the
# older generations walks every long-lived object of the app. Collections every 50,000 allocations,
# with the app's import-time objects frozen out of them (and shared, untouched, by the forked
# children), made event processing about 1.4× faster (bench/flows.py).
GC_THRESHOLDS = (50_000, 20, 20)
gc.freeze()
gc.set_threshold(*GC_THRESHOLDS)


@worker_process_init.connect
def _dispose_inherited_pool(**_: object) -> None:
    # A forked child must not reuse the parent's pooled connections: close=False drops them without
    # sending a terminate that would break the parent's copies.
    with flask_app.app_context():
        db.engine.dispose(close=False)
