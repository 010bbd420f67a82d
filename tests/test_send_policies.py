"""Send policies through a real worker, PostgreSQL, Redis and SMTP, with the clock the services read
moved on instead of slept through: quiet hours in each recipient's zone, recipient-local schedules,
frequency caps across campaigns (and the exemption), all counted in stats and the ledger."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from app import clock
from app.extensions import db
from app.models import Campaign, CampaignSendOptions, ContactTimezone, Delivery
from app.services import campaign_lifecycle as lifecycle
from app.services import campaign_stats, sending, settings
from tests.support import processes
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant

TOKYO, NEW_YORK = "Asia/Tokyo", "America/New_York"  # UTC+9; UTC-5 in December


@pytest.fixture()
def live_worker(ctx):
    with processes.worker(ctx.extensions["celery"], queues="campaigns,sends,default"):
        yield


def _clock_at(when: datetime) -> None:
    """Every process's policy clock reads `when` now (naive UTC)."""
    clock.set_offset(0)
    clock.set_offset((when - clock.now()).total_seconds())


def _zoned(user, zones: dict[str, str]) -> None:
    contacts = add_contacts(user, len(zones))
    for contact, (name, zone) in zip(contacts, zones.items(), strict=True):
        contact.email = f"{name}@example.com"
        db.session.add(ContactTimezone(contact_id=contact.id, timezone=zone, source="merchant"))
    db.session.commit()


def _received(sink) -> Counter:
    return Counter(rcpt for mail in sink.messages for rcpt in mail.recipients)


def _rows(campaign_id) -> dict[str, Delivery]:
    db.session.expire_all()
    return {row.address: row for row in db.session.scalars(sa.select(Delivery).where(
        Delivery.campaign_id == campaign_id))}


def _status(campaign_id) -> str:
    db.session.expire_all()
    return db.session.get_one(Campaign, campaign_id).status


# --- Quiet hours ----------------------------------------------------------------------------------

def test_quiet_hours_defer_each_recipient_to_the_end_of_their_own(ctx, live_worker, smtp_sink):
    # 12:30 UTC: 21:30 in Tokyo and 07:30 in New York, both inside 21:00–08:00.
    _clock_at(datetime(2026, 12, 7, 12, 30))
    user = verified_merchant()
    _zoned(user, {"tokyo": TOKYO, "newyork": NEW_YORK})
    settings.update_settings(user.id, {"quiet_hours": {"email": {"start": "21:00", "end": "08:00"}}})
    campaign, channel = email_campaign(user)
    lifecycle.launch_now(user.id, campaign.id)
    processes.wait_until(lambda: len(_rows(campaign.id)) == 2, timeout=30, what="the ledger")
    rows = _rows(campaign.id)
    assert {a: (r.status, r.deferred_by, r.not_before) for a, r in rows.items()} == {
        "tokyo@example.com": ("queued", "quiet_hours", datetime(2026, 12, 7, 23, 0)),  # 08:00 JST
        "newyork@example.com": ("queued", "quiet_hours", datetime(2026, 12, 7, 13, 0)),  # 08:00 EST
    }
    stats = campaign_stats.campaign_stats(user.id, campaign.id)
    assert stats.totals.deferred_count == 2 and stats.totals.deferred_by == {"quiet_hours": 2}

    _clock_at(datetime(2026, 12, 7, 13, 0, 5))
    smtp_sink.wait_for(1, timeout=30)
    assert _received(smtp_sink) == {"newyork@example.com": 1}
    assert _status(campaign.id) == "running"  # the last deferred message still waits

    _clock_at(datetime(2026, 12, 7, 23, 0, 5))
    smtp_sink.wait_for(2, timeout=30)
    processes.wait_until(lambda: _status(campaign.id) == "completed", timeout=30, what="completion")
    assert _received(smtp_sink) == {"newyork@example.com": 1, "tokyo@example.com": 1}
    stats = campaign_stats.campaign_stats(user.id, campaign.id)
    assert stats.totals.ledger["delivered"] == 2 and stats.totals.deferred_by == {"quiet_hours": 2}
    assert stats.totals.deferred_count == 0


def test_a_row_claimed_inside_quiet_hours_goes_back_until_they_end(ctx, smtp_sink):
    """Planned outside quiet hours, but a long send ran into them: the claim defers it, once."""
    _clock_at(datetime(2026, 12, 7, 20, 0))  # 05:00 in Tokyo: outside 06:00–09:00
    user = verified_merchant()
    _zoned(user, {"tokyo": TOKYO})
    settings.update_settings(user.id, {"quiet_hours": {"email": {"start": "06:00", "end": "09:00"}}})
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    assert _rows(campaign.id)["tokyo@example.com"].deferred_by is None
    _clock_at(datetime(2026, 12, 7, 21, 30))  # 06:30 in Tokyo
    assert sending.send_channel(channel.id) == 0
    row = _rows(campaign.id)["tokyo@example.com"]
    assert (row.status, row.deferred_by, row.not_before, row.claimed_at) == (
        "queued", "quiet_hours", datetime(2026, 12, 8, 0, 0), None)
    _clock_at(datetime(2026, 12, 8, 0, 0, 1))
    assert sending.send_channel(channel.id) == 1
    smtp_sink.wait_for(1)
    assert _received(smtp_sink) == {"tokyo@example.com": 1}


# --- Local-time schedules -------------------------------------------------------------------------

def test_recipient_local_time_sends_at_ten_in_each_zone(ctx, live_worker, smtp_sink, tmp_path):
    _clock_at(datetime(2026, 12, 7, 12, 0))
    user = verified_merchant()
    _zoned(user, {"tokyo": TOKYO, "newyork": NEW_YORK})
    campaign, _ = email_campaign(user)
    scheduled = lifecycle.schedule(user.id, campaign.id, datetime(2026, 12, 8, 10, 0),
                                   local_time=datetime(2026, 12, 8, 10, 0))
    # The first zone on Earth (UTC+14) reaches 10:00 on the 8th at 20:00 UTC on the 7th.
    assert scheduled.scheduled_at == datetime(2026, 12, 7, 20, 0)
    _clock_at(datetime(2026, 12, 7, 20, 0, 1))
    with processes.beat(tmp_path / "beat-schedule"):
        processes.wait_until(lambda: len(_rows(campaign.id)) == 2, timeout=60, what="the launch")
    rows = _rows(campaign.id)
    assert {a: (r.status, r.deferred_by, r.not_before) for a, r in rows.items()} == {
        "tokyo@example.com": ("queued", "local_time", datetime(2026, 12, 8, 1, 0)),  # 10:00 JST
        "newyork@example.com": ("queued", "local_time", datetime(2026, 12, 8, 15, 0)),  # 10:00 EST
    }
    _clock_at(datetime(2026, 12, 8, 1, 0, 5))
    smtp_sink.wait_for(1, timeout=30)
    assert _received(smtp_sink) == {"tokyo@example.com": 1}
    _clock_at(datetime(2026, 12, 8, 15, 0, 5))
    smtp_sink.wait_for(2, timeout=30)
    processes.wait_until(lambda: _status(campaign.id) == "completed", timeout=30, what="completion")
    assert _received(smtp_sink) == {"tokyo@example.com": 1, "newyork@example.com": 1}


@pytest.mark.parametrize("passed_zones", ["next_day", "skip"])
def test_zones_past_the_local_time_get_it_tomorrow_or_are_skipped(ctx, passed_zones):
    _clock_at(datetime(2026, 12, 8, 12, 0))  # 21:00 in Tokyo (past 10:00), 07:00 in New York
    user = verified_merchant()
    _zoned(user, {"tokyo": TOKYO, "newyork": NEW_YORK})
    campaign, _ = email_campaign(user)
    scheduled = lifecycle.schedule(user.id, campaign.id, datetime(2026, 12, 8, 10, 0),
                                   local_time=datetime(2026, 12, 8, 10, 0), passed_zones=passed_zones)
    # The first zones have passed 10:00 already: it launches at once.
    assert abs(scheduled.scheduled_at - datetime(2026, 12, 8, 12, 0)) < timedelta(seconds=5)
    assert lifecycle.launch_due() == [campaign.id]
    lifecycle.prepare_ledger(campaign.id)
    rows = _rows(campaign.id)
    assert (rows["newyork@example.com"].status, rows["newyork@example.com"].not_before) == (
        "queued", datetime(2026, 12, 8, 15, 0))
    tokyo = rows["tokyo@example.com"]
    if passed_zones == "next_day":
        assert (tokyo.status, tokyo.not_before) == ("queued", datetime(2026, 12, 9, 1, 0))
    else:
        assert (tokyo.status, tokyo.skip_reason) == ("skipped", "local_time_passed")


def test_local_time_schedule_through_the_api(live_client, app):
    from tests.support.accounts import signed_in

    tokens, headers = signed_in(live_client)
    with app.app_context():
        db.session.execute(sa.text('UPDATE users SET "isVerified" = true'))
        db.session.commit()
    campaign = live_client.post("/api/v1/campaigns", json={"name": "Ten o'clock", "frequencyCapExempt": True},
                                headers=headers).get_json()
    assert campaign["frequencyCapExempt"] is True
    cid = campaign["id"]
    live_client.post(f"/api/v1/campaigns/{cid}/channels", headers=headers, json={
        "channelType": "sms", "config": {"body": "Hi"}})
    live_client.post(f"/api/v1/campaigns/{cid}/audiences", headers=headers, json={
        "name": "all", "definition": {"match": "all", "conditions": []}})
    with app.app_context():
        ahead = (clock.now() + timedelta(days=2)).replace(microsecond=0)
    offset = live_client.post(f"/api/v1/campaigns/{cid}/schedule", headers=headers, json={
        "scheduledAt": ahead.isoformat() + "+02:00", "recipientLocalTime": True})
    assert offset.status_code == 422 and "scheduledAt" in offset.get_json()["errors"]
    bad = live_client.post(f"/api/v1/campaigns/{cid}/schedule", headers=headers, json={
        "scheduledAt": ahead.isoformat(), "recipientLocalTime": True, "passedZones": "never"})
    assert bad.status_code == 422 and "passedZones" in bad.get_json()["errors"]
    done = live_client.post(f"/api/v1/campaigns/{cid}/schedule", headers=headers, json={
        "scheduledAt": ahead.isoformat(), "recipientLocalTime": True, "passedZones": "skip"})
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert (body["status"], body["recipientLocalTime"], body["passedZones"]) == (
        "scheduled", ahead.isoformat(), "skip")
    assert body["scheduledAt"] == (ahead - timedelta(hours=14)).isoformat() + "+00:00"
    unscheduled = live_client.post(f"/api/v1/campaigns/{cid}/unschedule", headers=headers).get_json()
    assert unscheduled["recipientLocalTime"] is None and unscheduled["frequencyCapExempt"] is True


# --- Frequency caps -------------------------------------------------------------------------------

def _capped_merchant(contacts: int = 2):
    user = verified_merchant()
    add_contacts(user, contacts)
    settings.update_settings(user.id, {"frequency_caps": {"email": [{"messages": 1, "window_hours": 16},
                                                                     {"messages": 5, "window_hours": 168}]}})
    return user


def test_a_frequency_cap_skips_whoever_had_a_message_lately(ctx, smtp_sink):
    _clock_at(datetime(2026, 12, 7, 9, 0))
    user = _capped_merchant()
    first, first_channel = email_campaign(user, definitions=[{"match": "all", "conditions": [
        {"type": "attribute", "field": "email", "op": "eq", "value": "c0@example.com"}]}])
    launch(user.id, first.id)
    assert sending.send_channel(first_channel.id) == 1
    smtp_sink.wait_for(1)

    _clock_at(datetime(2026, 12, 7, 11, 0))  # two hours later
    second, second_channel = email_campaign(user)
    launch(user.id, second.id)
    assert sending.send_channel(second_channel.id) == 1
    rows = _rows(second.id)
    assert (rows["c0@example.com"].status, rows["c0@example.com"].skip_reason) == ("skipped", "frequency_capped")
    assert rows["c1@example.com"].status == "delivered"
    stats = campaign_stats.campaign_stats(user.id, second.id)
    assert stats.totals.skip_reasons == {"frequency_capped": 1} and stats.totals.sent_count == 1

    exempt, exempt_channel = email_campaign(user)  # a back-in-stock alert
    db.session.add(CampaignSendOptions(campaign_id=exempt.id, frequency_cap_exempt=True))
    db.session.commit()
    launch(user.id, exempt.id)
    assert sending.send_channel(exempt_channel.id) == 2
    smtp_sink.wait_for(4)
    assert _received(smtp_sink) == {"c0@example.com": 2, "c1@example.com": 2}

    _clock_at(datetime(2026, 12, 8, 12, 0))  # past the 16-hour window, within the weekly 5
    later, later_channel = email_campaign(user)
    launch(user.id, later.id)
    assert sending.send_channel(later_channel.id) == 2


def test_two_campaigns_reaching_one_contact_at_once_send_one_message(ctx, smtp_sink):
    user = _capped_merchant(contacts=40)
    channels = []
    for _ in range(2):
        campaign, channel = email_campaign(user)
        launch(user.id, campaign.id)
        channels.append(channel.id)

    def send(channel_id):
        with ctx.app_context():
            sending.send_channel(channel_id)

    threads = [threading.Thread(target=send, args=(channel_id,)) for channel_id in channels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    smtp_sink.wait_for(40)
    assert _received(smtp_sink) == {f"c{i}@example.com": 1 for i in range(40)}
    skipped = db.session.scalar(sa.select(sa.func.count(Delivery.id)).where(Delivery.skip_reason == "frequency_capped"))
    assert skipped == 40


def test_bad_settings_are_refused_and_nothing_is_stored(live_client, app):
    from tests.support.accounts import signed_in

    _, headers = signed_in(live_client)
    before = live_client.get("/api/v1/settings", headers=headers).get_json()
    for body, path in [
        ({"quietHours": {"email": {"start": "25:00", "end": "08:00"}}}, "quietHours"),
        ({"frequencyCaps": {"sms": [{"messages": 0, "windowHours": 16}]}}, "frequencyCaps"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ]:
        response = live_client.patch("/api/v1/settings", json={**body, "utm": {"source": "changed"}},
                                     headers=headers)
        assert response.status_code == 422 and path in response.get_json()["errors"]
    assert live_client.get("/api/v1/settings", headers=headers).get_json() == before
