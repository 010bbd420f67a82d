"""Whole processes: beat launches a scheduled campaign (two beats, one launch), and a worker
killed with SIGKILL mid-send loses nothing and sends nothing twice."""
from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import Campaign, CampaignChannel, Delivery, utcnow
from app.services import campaign_lifecycle as lifecycle
from tests.support import processes
from tests.support.campaigns import add_contacts, email_campaign, verified_merchant


def _campaign_status(app, campaign_id) -> str:
    with app.app_context():
        status = db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))
        db.session.remove()
        return status


def _ledger(app, campaign_id) -> Counter:
    with app.app_context():
        ledger = Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))
        db.session.remove()
        return ledger


def test_two_beat_processes_launch_a_scheduled_campaign_once(app, committed_db, smtp_sink, tmp_path):
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, 25)
        campaign, _ = email_campaign(user)
        lifecycle.schedule(user.id, campaign.id, utcnow() + timedelta(seconds=3))
        campaign_id = campaign.id
    celery_app = app.extensions["celery"]
    with processes.worker(celery_app), processes.beat(tmp_path / "beat-a"), processes.beat(tmp_path / "beat-b"):
        processes.wait_until(lambda: _campaign_status(app, campaign_id) == "completed", timeout=60,
                             what="the campaign to complete")
    assert _ledger(app, campaign_id) == {"delivered": 25}
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert len(received) == 25 and set(received.values()) == {1}


def test_a_worker_killed_mid_send_loses_nothing_and_sends_nothing_twice(app, committed_db, smtp_sink):
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, 2000)
        campaign, channel = email_campaign(user, config={"messagesPerSecond": 400})
        user_id, campaign_id, channel_id = user.id, campaign.id, channel.id
    celery_app = app.extensions["celery"]
    short_lease = {"SEND_LEASE_SECONDS": "2"}
    with processes.worker(celery_app, **short_lease) as doomed:
        with app.app_context():
            lifecycle.launch_now(user_id, campaign_id)
        smtp_sink.wait_for(400, timeout=60)
        processes.kill_group(doomed, signal.SIGKILL)  # the worker and its pool, mid-batch
    killed_at = len(smtp_sink.messages)
    assert killed_at < 2000, "the send finished before the worker could be killed"

    with processes.worker(celery_app, **short_lease):
        processes.reap_until_completed(app, campaign_id)

    ledger = _ledger(app, campaign_id)
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert set(received.values()) == {1}, "an address received two messages"
    assert set(ledger) <= {"delivered", "unknown"} and sum(ledger.values()) == 2000
    # Every recipient is either sent or reported unknown; the unknown ones are what the killed pool
    # processes had in flight (one sender each, SMTP_MAX_CONNECTIONS messages at most), nothing more.
    assert ledger["delivered"] <= len(received) <= ledger["delivered"] + ledger["unknown"]
    assert ledger["unknown"] <= 2 * app.config["HERALD_SETTINGS"].smtp_max_connections
    with app.app_context():
        channel = db.session.get(CampaignChannel, channel_id)
        assert channel.sent_count == channel.delivered_count == ledger["delivered"]
        db.session.remove()
