"""Launches that answer at once: the ledger is written by a worker in chunks (LAUNCH_CHUNK_CONTACTS is
50 in the tests), resumable after a crash, with pause and cancel working while it is written, and
each due campaign launched in a transaction of its own."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Campaign, Delivery, LedgerPreparation, utcnow
from app.services import campaign_lifecycle as lifecycle
from app.services import delivery_ledger, sending
from tests.support import processes
from tests.support.accounts import login
from tests.support.campaigns import add_contacts, email_campaign, verified_merchant

CHUNK = 50  # tests/conftest.py: LAUNCH_CHUNK_CONTACTS


def _ledger(campaign_id) -> Counter:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))


def _rows_per_contact(campaign_id) -> Counter:
    return Counter(db.session.scalars(sa.select(Delivery.contact_id).where(Delivery.campaign_id == campaign_id)))


def test_launch_answers_before_the_ledger_is_written_then_everyone_gets_one_message(app, committed_db, smtp_sink):
    with app.app_context():
        user = verified_merchant()
        user.password_hash = _hash()
        add_contacts(user, 4 * CHUNK + 7)
        campaign, _ = email_campaign(user)
        db.session.commit()
        email, campaign_id = user.email, campaign.id
    client = app.test_client()
    headers = {"Authorization": f"Bearer {login(client, email)['accessToken']}"}
    # No worker yet: the answer cannot have waited for the ledger.
    launched = client.post(f"/api/v1/campaigns/{campaign_id}/launch", headers=headers)
    assert launched.status_code == 200 and launched.get_json()["status"] == "running"
    stats = client.get(f"/api/v1/campaigns/{campaign_id}/stats", headers=headers).get_json()
    assert stats["preparation"] == {"preparing": True, "rowsWritten": 0, "audienceSize": None}
    assert stats["totals"]["ledger"]["queued"] == 0
    with processes.worker(app.extensions["celery"]):
        processes.wait_until(lambda: processes.campaign_status(app, campaign_id) == "completed", timeout=90,
                             what="the campaign to complete")
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert len(received) == 4 * CHUNK + 7 and set(received.values()) == {1}
    stats = client.get(f"/api/v1/campaigns/{campaign_id}/stats", headers=headers).get_json()
    assert stats["preparation"] == {"preparing": False, "rowsWritten": 4 * CHUNK + 7, "audienceSize": 4 * CHUNK + 7}


def _hash() -> str:
    from app.security.passwords import hash_password
    from tests.support.accounts import PASSWORD

    return hash_password(PASSWORD)


def test_a_chunk_that_crashed_is_written_once_when_taken_up_again(ctx, monkeypatch):
    user = verified_merchant()
    add_contacts(user, 5 * CHUNK)
    campaign, _ = email_campaign(user)
    lifecycle.launch_now(user.id, campaign.id)
    real_write = delivery_ledger.write_range
    calls = {"n": 0}

    def crash_on_the_third_chunk(*args, **kwargs):
        calls["n"] += 1
        written = real_write(*args, **kwargs)
        if calls["n"] == 3:
            raise RuntimeError("worker lost mid-chunk")  # after the rows, before the commit
        return written

    monkeypatch.setattr(delivery_ledger, "write_range", crash_on_the_third_chunk)
    with pytest.raises(RuntimeError):
        lifecycle.prepare_ledger(campaign.id)
    db.session.rollback()
    assert sum(_ledger(campaign.id).values()) == 2 * CHUNK  # the crashed chunk left nothing
    monkeypatch.setattr(lifecycle, "PREPARE_IDLE_SECONDS", 0.0)
    db.session.execute(sa.update(LedgerPreparation).values(updated_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    lifecycle.launch_due()  # beat's sweep takes the stalled ledger up again (as a task)
    lifecycle.prepare_ledger(campaign.id)  # that task, here
    rows = _rows_per_contact(campaign.id)
    assert len(rows) == 5 * CHUNK and set(rows.values()) == {1}
    assert _ledger(campaign.id) == {"queued": 5 * CHUNK}


def test_pause_while_preparing_writes_the_ledger_and_sends_nothing_until_resumed(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 3 * CHUNK)
    campaign, channel = email_campaign(user)
    lifecycle.launch_now(user.id, campaign.id)
    lifecycle.prepare_ledger(campaign.id, time_budget=0)  # one chunk, then the task would go on
    assert _ledger(campaign.id) == {"queued": CHUNK}
    lifecycle.pause(user.id, campaign.id)
    lifecycle.prepare_ledger(campaign.id)
    assert _ledger(campaign.id) == {"queued": 3 * CHUNK}
    assert sending.send_channel(channel.id) == 0  # paused: nothing goes out
    lifecycle.resume(user.id, campaign.id)
    sending.send_channel(channel.id)
    smtp_sink.wait_for(3 * CHUNK)
    assert _ledger(campaign.id) == {"delivered": 3 * CHUNK}
    assert db.session.get(Campaign, campaign.id).status == "completed"


def test_cancel_while_preparing_stops_the_ledger_and_skips_what_was_written(ctx):
    user = verified_merchant()
    add_contacts(user, 4 * CHUNK)
    campaign, _ = email_campaign(user)
    lifecycle.launch_now(user.id, campaign.id)
    lifecycle.prepare_ledger(campaign.id, time_budget=0)
    lifecycle.cancel(user.id, campaign.id)
    assert lifecycle.prepare_ledger(campaign.id) == 0
    assert _ledger(campaign.id) == {"skipped": CHUNK}
    db.session.expire_all()
    assert db.session.get(LedgerPreparation, campaign.id).finished_at is not None
    assert db.session.get(Campaign, campaign.id).status == "completed"


def test_nothing_completes_a_campaign_while_its_ledger_is_being_written(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 2 * CHUNK)
    campaign, channel = email_campaign(user)
    lifecycle.launch_now(user.id, campaign.id)
    lifecycle.prepare_ledger(campaign.id, time_budget=0)
    sending.send_channel(channel.id)  # the first chunk, all of it
    smtp_sink.wait_for(CHUNK)
    sending.reap_and_resume()
    assert db.session.get(Campaign, campaign.id).status == "running"
    lifecycle.prepare_ledger(campaign.id)
    sending.send_channel(channel.id)
    smtp_sink.wait_for(2 * CHUNK)
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "completed"


def test_beats_launch_each_due_campaign_once_each_in_its_own_transaction(ctx, app):
    user = verified_merchant()
    add_contacts(user, CHUNK)
    due = [email_campaign(user)[0].id for _ in range(4)]
    for campaign_id in due:
        lifecycle.schedule(user.id, campaign_id, utcnow() + timedelta(seconds=30))
    db.session.execute(sa.update(Campaign).where(Campaign.id.in_(due)).values(scheduled_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    # Another transaction holds one of them: the others are launched without waiting for it.
    with db.engine.connect() as other:
        other.execute(sa.select(Campaign.id).where(Campaign.id == due[0]).with_for_update())
        launched: list = []

        def beat() -> None:
            with app.app_context():
                launched.extend(lifecycle.launch_due())
                db.session.remove()

        beats = [threading.Thread(target=beat) for _ in range(3)]
        for thread in beats:
            thread.start()
        for thread in beats:
            thread.join()
        assert sorted(launched) == sorted(due[1:])
        other.rollback()
    assert lifecycle.launch_due() == [due[0]]
    assert sorted(lifecycle.launch_due()) == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LedgerPreparation)
                             .where(LedgerPreparation.campaign_id.in_(due))) == 4
    assert all(c.status == "running" for c in db.session.scalars(sa.select(Campaign).where(Campaign.id.in_(due))))


def _written(app, campaign_id) -> tuple[int, bool]:
    with app.app_context():
        progress = db.session.get(LedgerPreparation, campaign_id)
        result = (progress.rows_written, progress.finished_at is not None) if progress else (0, False)
        db.session.remove()
        return result


@pytest.mark.slow
def test_a_worker_killed_while_writing_the_ledger_is_taken_up_again(app, committed_db, smtp_sink, monkeypatch):
    contacts = 200 * CHUNK
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, contacts)
        campaign, _ = email_campaign(user)
        user_id, campaign_id = user.id, campaign.id
    celery_app = app.extensions["celery"]
    with processes.worker(celery_app, SEND_LEASE_SECONDS="2") as doomed:
        with app.app_context():
            lifecycle.launch_now(user_id, campaign_id)
        processes.wait_until(lambda: _written(app, campaign_id)[0] >= 10 * CHUNK, timeout=60,
                             what="part of the ledger to be written", interval=0.02)
        processes.kill_group(doomed)  # the worker and its pool, mid-ledger (and mid-send)
    rows, finished = _written(app, campaign_id)
    assert not finished and rows < contacts
    monkeypatch.setattr(lifecycle, "PREPARE_IDLE_SECONDS", 0.0)
    with processes.worker(celery_app, SEND_LEASE_SECONDS="2"):
        with app.app_context():
            lifecycle.launch_due()  # beat's sweep: the stalled ledger is taken up where it stopped
            db.session.remove()
        processes.reap_until_completed(app, campaign_id)
    with app.app_context():
        per_contact = _rows_per_contact(campaign_id)
        db.session.remove()
    assert len(per_contact) == contacts and set(per_contact.values()) == {1}
    received = Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    assert set(received.values()) <= {1}
