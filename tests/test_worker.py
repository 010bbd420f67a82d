"""The Celery runtime through the real Redis broker: routing, publish-after-commit, a real worker."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis as redis_lib
import sqlalchemy as sa

import celeryconfig
from app.config import SEND_LEASE_SECONDS, ConfigError, beat_sweep_seconds
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import TokenBlacklist, User, utcnow
from tests.conftest import TEST_REDIS_URL

PURGE = "maintenance.purge_token_blacklist"


@pytest.fixture()
def broker():
    client = redis_lib.Redis.from_url(TEST_REDIS_URL)
    yield client
    client.close()


def test_each_kind_of_work_has_its_queue(app):
    router = app.extensions["celery"].amqp.router
    for kind in ("maintenance", "sources", "events", "campaigns", "sends", "assistant"):
        assert router.route({}, f"{kind}.anything")["queue"].name == kind
    assert router.route({}, "misc")["queue"].name == "default"


def test_every_task_name_is_registered_on_a_declared_queue_and_beat_names_only_those(app):
    import workers  # noqa: F401 (registers the tasks, as `celery -A workers` does)
    from app import task_names

    celery_app = app.extensions["celery"]
    celery_app.loader.import_default_modules()
    assert set(task_names.ALL) <= set(celery_app.tasks)
    assert {name for name in celery_app.tasks if not name.startswith("celery.")} == set(task_names.ALL)
    for name in task_names.ALL:
        assert celery_app.amqp.router.route({}, name)["queue"].name in celeryconfig.QUEUES
    assert {entry["task"] for entry in celeryconfig.beat_schedule.values()} <= set(task_names.ALL)
    assert set(celeryconfig.beat_schedule) == {entry["task"] for entry in celeryconfig.beat_schedule.values()}


def test_limits_are_consistent():
    assert celeryconfig.task_soft_time_limit < celeryconfig.task_time_limit
    assert celeryconfig.broker_transport_options["visibility_timeout"] > celeryconfig.task_time_limit
    assert celeryconfig.beat_schedule[PURGE]["schedule"] == 3600.0


def test_an_idle_platform_sends_few_sweeps():
    # Flower lists every task beat sends: an idle platform once showed 220 sweeps in 9 minutes.
    # Half of them are the send reaper's (every 10 s: a dead worker's rows settle within a 30 s
    # lease plus that).
    nine_minutes = 540.0
    assert sum(nine_minutes / entry["schedule"] for entry in celeryconfig.beat_schedule.values()) < 115
    # Still often enough for what each one bounds: a scheduled launch's delay, a lapsed send lease.
    assert celeryconfig.beat_schedule["campaigns.launch_due"]["schedule"] <= 15
    assert celeryconfig.beat_schedule["campaigns.reap_stalled"]["schedule"] <= SEND_LEASE_SECONDS / 3


def test_the_two_frequent_sweeps_may_only_be_made_more_frequent():
    # The test process reads the defaults: only the beat processes tests start sweep every second.
    assert (celeryconfig.LAUNCH_DUE_SECONDS, celeryconfig.REAP_STALLED_SECONDS) == beat_sweep_seconds({}) == (15, 10)
    assert beat_sweep_seconds({"BEAT_LAUNCH_DUE_SECONDS": "1", "BEAT_REAP_STALLED_SECONDS": "2"}) == (1, 2)
    for name, value in (("BEAT_LAUNCH_DUE_SECONDS", "16"), ("BEAT_REAP_STALLED_SECONDS", "0"),
                        ("BEAT_REAP_STALLED_SECONDS", "often")):
        with pytest.raises(ConfigError, match=name):
            beat_sweep_seconds({name: value})


def test_task_is_published_only_after_commit(app_ctx, broker):
    db.session.add(User(email="a@example.com", password_hash="x"))
    enqueue_after_commit(PURGE)
    assert broker.llen("maintenance") == 0  # still inside the transaction
    db.session.commit()
    assert broker.llen("maintenance") == 1


def test_task_is_dropped_on_rollback(app_ctx, broker):
    db.session.add(User(email="b@example.com", password_hash="x"))
    enqueue_after_commit(PURGE)
    db.session.rollback()
    db.session.commit()
    assert broker.llen("maintenance") == 0


def test_purge_runs_on_a_real_worker(app, celery_worker):
    now = utcnow()
    with app.app_context():
        user = User(email="worker@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        db.session.add_all(
            [
                TokenBlacklist(jti="old", user_id=user.id, expires_at=now - timedelta(minutes=5)),
                TokenBlacklist(jti="live", user_id=user.id, expires_at=now + timedelta(minutes=5)),
            ]
        )
        db.session.commit()

    app.extensions["celery"].send_task(PURGE)
    deadline = time.monotonic() + 20
    with app.app_context():
        while time.monotonic() < deadline:
            remaining = db.session.scalars(sa.select(TokenBlacklist.jti)).all()
            db.session.rollback()
            if remaining == ["live"]:
                break
            time.sleep(0.1)
    assert remaining == ["live"]
