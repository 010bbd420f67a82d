"""Outages of what Herald stands on, with real servers killed and started again: Redis (the broker)
under a running campaign; PostgreSQL under the API and ingest; a sender worker SIGKILLed mid-send."""
from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from app.config import REAP_STALLED_SWEEP_SECONDS
from app.errors import UNAVAILABLE_RETRY_AFTER
from app.extensions import db
from app.models import Delivery, User
from app.services import campaign_lifecycle as lifecycle
from app.services import sending
from tests.conftest import make_app
from tests.support import processes
from tests.support.accounts import PASSWORD, signed_in
from tests.support.campaigns import add_contacts, email_campaign, verified_merchant
from tests.support.servers import PostgresServer, RedisServer
from tests.support.sources import capi_event, make_merchant, make_source


@pytest.fixture()
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture()
def broker_app(app: Flask, committed_db: None, redis_server: RedisServer) -> Iterator[Flask]:
    """The app with every Redis use, the broker included, on the test's own Redis server."""
    flask_app = make_app(REDIS_URL=redis_server.url)
    flask_app.extensions["celery"].conf.broker_url = redis_server.url
    yield flask_app
    app.extensions["celery"].set_default()


def _ledger(app: Flask, campaign_id) -> Counter:
    with app.app_context():
        ledger = Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))
        db.session.remove()
        return ledger


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_campaign_rides_out_a_redis_restart(broker_app, redis_server, smtp_sink, tmp_path):
    # Five sender tasks: two run, three wait reserved (unacknowledged), and the worker is still
    # reading the queue when Redis dies, as an ordinary busy worker is.
    recipients = 1000
    smtp_sink.data_latency = 0.01
    with broker_app.app_context():
        user = verified_merchant()
        add_contacts(user, recipients)
        campaign, _ = email_campaign(user)
        user_id, campaign_id = user.id, campaign.id
        db.session.remove()
    celery_app = broker_app.extensions["celery"]
    env = {"REDIS_URL": redis_server.url}
    with processes.worker(celery_app, **env) as worker, processes.beat(tmp_path / "beat", **env) as beat:
        with broker_app.app_context():
            lifecycle.launch_now(user_id, campaign_id)
        smtp_sink.wait_for(200, timeout=60)
        redis_server.kill()  # every queued message and rate-limit key is lost with it
        killed_at = len(smtp_sink.messages)
        time.sleep(3)
        redis_server.start()

        def completed() -> bool:
            # The same worker and beat carry on: nobody restarts anything.
            assert worker.poll() is None, "the worker exited"
            assert beat.poll() is None, "beat exited"
            return processes.campaign_status(broker_app, campaign_id) == "completed"

        processes.wait_until(completed, timeout=180, what="the campaign to complete after Redis came back")
    assert killed_at < recipients, "the campaign finished before Redis was killed"
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert len(received) == recipients and set(received.values()) == {1}
    assert _ledger(broker_app, campaign_id) == {"delivered": recipients}


def test_work_committed_while_redis_is_down_is_kept_and_the_request_succeeds(app, committed_db):
    """Registering queues a verification mail after its commit; with the broker down the message
    can't be published, the account is kept, and beat's sweep sends the mail later."""
    down = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    flask_app = make_app(REDIS_URL=down)
    flask_app.extensions["celery"].conf.broker_url = down
    try:
        response = flask_app.test_client().post("/api/v1/auth/register",
                                                json={"email": "down@example.com", "password": PASSWORD})
    finally:
        app.extensions["celery"].set_default()
    assert response.status_code == 201, response.get_json()
    with app.app_context():
        assert db.session.scalar(sa.select(User.id).where(User.email == "down@example.com")) is not None
        db.session.remove()


@pytest.fixture()
def postgres_app(app: Flask) -> Iterator[tuple[Flask, PostgresServer]]:
    """The app on a PostgreSQL server of the test's own, migrated."""
    from flask_migrate import upgrade

    server = PostgresServer()
    try:
        server.init()
        flask_app = make_app(DATABASE_URL=server.url)
        with flask_app.app_context():
            upgrade()
        yield flask_app, server
    finally:
        app.extensions["celery"].set_default()
        server.destroy()


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.get_json()
    # flask-limiter rewrites it on rate-limited routes such as login: a whole second or more, never later.
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1, "a client is told to wait before retrying"
    assert retry_after <= UNAVAILABLE_RETRY_AFTER, "and never longer than the outage answer says"
    assert response.get_json()["code"] == "service_unavailable"


def test_api_and_ingest_answer_503_while_postgres_is_down_then_recover(postgres_app):
    flask_app, server = postgres_app
    client = flask_app.test_client()
    _, auth = signed_in(client)
    with flask_app.app_context():
        source, key = make_source(make_merchant(), "facebook_pixel")
        source_id = source.id
        db.session.remove()

    def me():
        return client.get("/api/v1/users/me", headers=auth)

    def ingest(name: str):
        return client.post(f"/ingest/facebook-pixel/{source_id}", json={"data": [capi_event(name)]},
                           headers={"X-Ingest-Key": key})

    assert me().status_code == 200
    assert ingest("PageView").status_code == 202

    server.stop()
    _assert_unavailable(me())
    _assert_unavailable(ingest("AddToCart"))
    _assert_unavailable(client.post("/api/v1/auth/login", json={"email": "x@example.com", "password": "p" * 12}))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
    assert ready.get_json()["checks"]["database"] == "unreachable"

    server.start()  # the same web process, not restarted
    assert me().status_code == 200
    assert ingest("Purchase").get_json()["accepted"] == 1
    assert client.get("/readyz").status_code == 200

    # Restarted while no request came: the first request meets the pool's dead connections and
    # is told to retry; the retry succeeds.
    server.stop()
    server.start()
    first = me()
    if first.status_code != 200:
        _assert_unavailable(first)
    assert me().status_code == 200


def _rows(app: Flask, campaign_id, status: str) -> set:
    with app.app_context():
        rows = set(db.session.scalars(sa.select(Delivery.id).where(Delivery.campaign_id == campaign_id,
                                                                   Delivery.status == status)))
        db.session.remove()
        return rows


def _reap(app: Flask) -> None:
    """What beat's reaper does."""
    with app.app_context():
        sending.reap_and_resume()
        db.session.remove()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sigkilled_senders_rows_settle_as_unknown_within_about_30_s(app, committed_db, smtp_sink, tmp_path):
    """With the default lease and beat's reaper at its own interval, nothing done by hand."""
    recipients = 300
    smtp_sink.data_latency = 0.5  # each sender has its SMTP connections' worth of mail in flight
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, recipients)
        campaign, _ = email_campaign(user)
        user_id, campaign_id = user.id, campaign.id
    celery_app = app.extensions["celery"]
    # The reaper at production's interval, so its first sweep comes after the kill: a sweep while the
    # doomed worker still sends would spend the channel's restart on it (at most one a minute).
    with processes.beat(tmp_path / "beat", BEAT_REAP_STALLED_SECONDS=str(REAP_STALLED_SWEEP_SECONDS)):
        with processes.worker(celery_app) as doomed:
            with app.app_context():
                lifecycle.launch_now(user_id, campaign_id)
            smtp_sink.wait_for(40, timeout=60)
            processes.kill_group(doomed, signal.SIGKILL)
        killed = time.monotonic()
        in_flight = _rows(app, campaign_id, "sending")
        assert in_flight, "nothing was in flight when the worker was killed"
        # Another worker runs beat's reaper (and carries the campaign on).
        with processes.worker(celery_app):
            processes.wait_until(lambda: not in_flight & _rows(app, campaign_id, "sending"), timeout=90,
                                 what="the killed worker's rows to settle", interval=0.5)
            settled_after = time.monotonic() - killed
            processes.wait_until(lambda: processes.campaign_status(app, campaign_id) == "completed",
                                 timeout=90, what="the campaign to complete")
    # The 30 s lease (renewed up to 10 s before the kill) plus beat's 10 s reaper interval, with
    # room for a loaded machine.
    assert settled_after < 50, f"the rows took {settled_after:.0f} s to settle"
    assert _rows(app, campaign_id, "unknown") == in_flight
    ledger = _ledger(app, campaign_id)
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert set(received.values()) == {1}, "an address received two messages"
    assert ledger == {"delivered": recipients - len(in_flight), "unknown": len(in_flight)}
    assert ledger["delivered"] <= len(received) <= recipients


def test_a_live_sender_slower_than_its_lease_keeps_its_rows(app, committed_db, smtp_sink):
    """Each message takes longer than the lease; the reaper runs all along and reaps nothing."""
    recipients = 8
    smtp_sink.data_latency = 3.0
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, recipients)
        campaign, _ = email_campaign(user)
        user_id, campaign_id = user.id, campaign.id
    with processes.worker(app.extensions["celery"], SEND_LEASE_SECONDS="1"):
        with app.app_context():
            lifecycle.launch_now(user_id, campaign_id)

        def completed() -> bool:
            _reap(app)
            return processes.campaign_status(app, campaign_id) == "completed"

        processes.wait_until(completed, timeout=90, what="the campaign to complete", interval=0.25)
    assert _ledger(app, campaign_id) == {"delivered": recipients}
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert len(received) == recipients and set(received.values()) == {1}
