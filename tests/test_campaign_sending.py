"""The send engine against real PostgreSQL, Redis and an SMTP server: launch once, the ledger,
counters that equal the ledger and the mail received, pause/resume, cancel, the shared rate."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import db
from app.models import Campaign, Delivery, utcnow
from app.services import campaign_lifecycle as lifecycle
from app.services import sending
from tests.support.campaigns import (
    EVERYONE,
    add_contacts,
    email_campaign,
    launch,
    verified_merchant,
)


def _ledger(campaign_id) -> Counter:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))


def _refresh(*objects):
    db.session.expire_all()
    return [db.session.get(type(o), o.id) for o in objects]


def _recipients(sink) -> Counter:
    return Counter(rcpt for mail in sink.messages for rcpt in mail.recipients)


def test_launch_sends_once_to_everyone_and_counts_honestly(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 30)
    add_contacts(user, 2, prefix="gone", email="unsubscribed")
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    assert _ledger(campaign.id) == {"queued": 30, "skipped": 2}
    assert sending.send_channel(channel.id) == 30
    smtp_sink.wait_for(30)
    campaign, channel = _refresh(campaign, channel)
    assert _ledger(campaign.id) == {"delivered": 30, "skipped": 2}
    assert (channel.sent_count, channel.delivered_count, channel.status) == (30, 30, "sent")
    assert campaign.status == "completed" and campaign.ended_at is not None
    assert set(_recipients(smtp_sink).values()) == {1} and len(_recipients(smtp_sink)) == 30
    reasons = db.session.scalars(sa.select(Delivery.skip_reason).where(Delivery.status == "skipped")).all()
    assert reasons == ["consent_unsubscribed"] * 2


def test_a_contact_in_two_audiences_gets_one_message(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 5)
    campaign, channel = email_campaign(user, definitions=[EVERYONE, EVERYONE])
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    assert _ledger(campaign.id) == {"delivered": 5}
    assert len(smtp_sink.wait_for(5)) == 5


def test_launch_rules(ctx):
    user = verified_merchant()
    campaign, _ = email_campaign(user)
    user.is_verified = False
    db.session.commit()
    with pytest.raises(Forbidden):
        launch(user.id, campaign.id)
    user.is_verified = True
    bare = Campaign(user_id=user.id, name="empty", config={})
    db.session.add(bare)
    db.session.commit()
    with pytest.raises(ValidationFailed) as missing:
        launch(user.id, bare.id)
    assert set(missing.value.errors) == {"channels", "audiences"}
    with pytest.raises(Conflict):
        lifecycle.pause(user.id, campaign.id)  # a draft cannot pause
    assert _refresh(campaign)[0].status == "draft"


def test_schedule_unschedule_and_only_future_times(ctx):
    user = verified_merchant()
    campaign, _ = email_campaign(user)
    with pytest.raises(ValidationFailed):
        lifecycle.schedule(user.id, campaign.id, utcnow() - timedelta(minutes=1))
    lifecycle.schedule(user.id, campaign.id, utcnow() + timedelta(hours=1))
    assert _refresh(campaign)[0].status == "scheduled"
    lifecycle.unschedule(user.id, campaign.id)
    campaign = _refresh(campaign)[0]
    assert (campaign.status, campaign.scheduled_at) == ("draft", None)
    with pytest.raises(Conflict):
        lifecycle.resume(user.id, campaign.id)


def test_two_beats_launch_a_due_campaign_once(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 10)
    campaign, channel = email_campaign(user)
    lifecycle.schedule(user.id, campaign.id, utcnow() + timedelta(seconds=30))
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id)
                       .values(scheduled_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    launched: list = []

    def beat() -> None:
        with ctx.app_context():
            launched.extend(lifecycle.launch_due())
            db.session.remove()

    beats = [threading.Thread(target=beat) for _ in range(4)]
    for thread in beats:
        thread.start()
    for thread in beats:
        thread.join()
    assert launched == [campaign.id]
    lifecycle.prepare_ledger(campaign.id)  # the worker's task, here
    assert _ledger(campaign.id) == {"queued": 10}
    assert _refresh(campaign)[0].started_at is not None


def test_pause_stops_between_batches_and_resume_never_resends(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 60)
    campaign, channel = email_campaign(user, config={"messagesPerSecond": 40})
    launch(user.id, campaign.id)
    worker = threading.Thread(target=_send_in_thread, args=(ctx, channel.id))
    worker.start()
    smtp_sink.wait_for(15)
    lifecycle.pause(user.id, campaign.id)
    worker.join(timeout=30)
    paused_at = len(smtp_sink.messages)
    assert 15 <= paused_at < 60
    time.sleep(0.3)
    assert len(smtp_sink.messages) == paused_at  # nothing more goes out while paused
    ledger = _ledger(campaign.id)
    assert ledger["queued"] == 60 - paused_at and ledger["sending"] == 0
    lifecycle.resume(user.id, campaign.id)
    sending.send_channel(channel.id)
    assert set(_recipients(smtp_sink).values()) == {1} and len(smtp_sink.messages) == 60
    assert _refresh(campaign)[0].status == "completed"


def _send_in_thread(app, channel_id) -> None:
    with app.app_context():
        sending.send_channel(channel_id)
        db.session.remove()


def test_cancel_skips_the_rest(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 12)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    lifecycle.cancel(user.id, campaign.id)
    assert sending.send_channel(channel.id) == 0
    campaign, channel = _refresh(campaign, channel)
    assert campaign.status == "completed" and campaign.ended_at is not None
    assert _ledger(campaign.id) == {"skipped": 12} and channel.status == "sent"
    assert smtp_sink.messages == []
    with pytest.raises(Conflict):
        lifecycle.resume(user.id, campaign.id)


def test_rate_is_shared_by_every_sender(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 40)
    campaign, channel = email_campaign(user, config={"messagesPerSecond": 20})
    launch(user.id, campaign.id)
    started = time.monotonic()
    senders = [threading.Thread(target=_send_in_thread, args=(ctx, channel.id)) for _ in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    # 40 messages at 20/s with a one-second burst: at least ~1 s however many senders share the work.
    assert elapsed >= 0.9
    assert _ledger(campaign.id) == {"delivered": 40} and len(smtp_sink.wait_for(40)) == 40


def test_unreachable_smtp_hands_rows_back(app, committed_db):
    from app.channels.base import ProviderUnavailable
    from tests.conftest import make_app

    offline = make_app(SMTP_URL="smtp://127.0.0.1:1")  # nothing listens there
    with offline.app_context():
        user = verified_merchant()
        add_contacts(user, 5)
        campaign, channel = email_campaign(user)
        launch(user.id, campaign.id)
        with pytest.raises(ProviderUnavailable):
            sending.send_channel(channel.id)
        assert _ledger(campaign.id) == {"queued": 5}
        db.session.remove()


def test_reaper_calls_lapsed_sends_unknown_and_finishes(ctx):
    user = verified_merchant()
    add_contacts(user, 3)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    db.session.execute(sa.update(Delivery).where(Delivery.campaign_id == campaign.id)
                       .values(status="sending", lease_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    sending.reap_and_resume()
    campaign, channel = _refresh(campaign, channel)
    assert _ledger(campaign.id) == {"unknown": 3}
    assert campaign.status == "completed" and channel.status == "sent" and channel.sent_count == 0


def test_one_click_unsubscribe_is_honoured_by_the_next_campaign(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 3)
    first, channel = email_campaign(user)
    launch(user.id, first.id)
    sending.send_channel(channel.id)
    mail = next(m for m in smtp_sink.wait_for(3) if m.recipients == ("c1@example.com",))
    unsubscribe_url = mail.message["List-Unsubscribe"].strip("<>")
    path = "/" + unsubscribe_url.split("/", 3)[3]
    response = ctx.test_client().post(path, data="List-Unsubscribe=One-Click",
                                      content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200

    second, channel = email_campaign(user)
    launch(user.id, second.id)
    smtp_sink.clear()
    sending.send_channel(channel.id)
    assert sorted(r for m in smtp_sink.wait_for(2) for r in m.recipients) == ["c0@example.com", "c2@example.com"]
    skipped = db.session.scalars(sa.select(Delivery.skip_reason).where(Delivery.campaign_id == second.id,
                                                                       Delivery.status == "skipped")).all()
    assert skipped == ["consent_unsubscribed"]


def test_a_receipt_that_beats_the_ledger_write_is_applied_when_the_id_is_recorded(ctx):
    from app.models import HeldReceipt
    from app.services import delivery_ledger
    from app.services.delivery_ledger import Outcome

    user = verified_merchant()
    add_contacts(user, 1)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    (claimed,) = delivery_ledger.claim(channel.id, 1, timedelta(minutes=1))
    delivery_ledger.apply_provider_status("email", "msg-1", "delivered")  # the provider is fast
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(HeldReceipt)) == 1
    delivery_ledger.record(channel.id, "email", [Outcome(claimed.id, "sent", provider_message_id="msg-1")])
    delivery_ledger.apply_provider_status("email", "msg-1", "delivered")  # and repeats itself
    db.session.commit()
    campaign, channel = _refresh(campaign, channel)
    assert _ledger(campaign.id) == {"delivered": 1}
    assert (channel.sent_count, channel.delivered_count) == (1, 1)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(HeldReceipt)) == 0


def test_a_receipt_held_while_the_sender_was_committing_is_applied_by_the_sweep(ctx):
    from app.models import HeldReceipt
    from app.services import delivery_ledger
    from app.services.delivery_ledger import Outcome

    user = verified_merchant()
    add_contacts(user, 1)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    (claimed,) = delivery_ledger.claim(channel.id, 1, timedelta(minutes=1))
    delivery_ledger.record(channel.id, "email", [Outcome(claimed.id, "sent", provider_message_id="msg-2")])
    db.session.commit()
    # The receipt was held by a callback that could not yet see the recorded id.
    db.session.add(HeldReceipt(channel_type="email", provider_message_id="msg-2", status="delivered"))
    db.session.commit()
    sending.reap_and_resume()
    campaign, channel = _refresh(campaign, channel)
    assert _ledger(campaign.id) == {"delivered": 1} and channel.delivered_count == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(HeldReceipt)) == 0


def test_a_deleted_campaign_that_sent_keeps_its_links_working(ctx, smtp_sink):
    from app.services import campaigns

    user = verified_merchant()
    add_contacts(user, 2)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    campaigns.delete_campaign(user.id, campaign.id)
    with pytest.raises(NotFound):
        campaigns.owned_campaign(user.id, campaign.id)
    mail = smtp_sink.wait_for(2)[0]
    path = "/" + mail.message["List-Unsubscribe"].strip("<>").split("/", 3)[3]
    assert ctx.test_client().post(path).status_code == 200
