"""The Celery application, bound to Herald's Flask app (`celery -A workers worker|beat|flower`)."""
from celery.signals import worker_process_init

from app import create_app
from app.extensions import db
from app.jobs import tune_gc

flask_app = create_app()
celery = flask_app.extensions["celery"]

tune_gc()  # the app is built: what it holds now lives as long as the process


@worker_process_init.connect
def _dispose_inherited_pool(**_: object) -> None:
    # A forked child must not reuse the parent's pooled connections: close=False drops them without
    # sending a terminate that would break the parent's copies.
    with flask_app.app_context():
        db.engine.dispose(close=False)
