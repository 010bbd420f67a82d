"""Limits that belong to the provider account, with real worker processes: two campaigns on one
Twilio account share its rate; a Retry-After slows both; an hourly quota holds sends back and the
stats say so; a relay that is down is named in the stats and each recipient gets one message once
it is back."""
from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis as redis_lib
import sqlalchemy as sa
from flask import Flask

from app.extensions import db
from app.models import Campaign, CampaignChannel, Contact, User
from app.services import campaign_lifecycle as lifecycle
from app.services import campaign_stats, sending
from tests.conftest import TEST_REDIS_URL
from tests.emulators.twilio import TwilioEmulator
from tests.support import processes
from tests.support.campaigns import (
    add_contacts,
    campaign_on,
    email_campaign,
    verified_merchant,
)
from tests.support.providers import add_provider_account
from tests.support.smtp_sink import SmtpSink

TWILIO = {"accountSid": "AC" + "7a" * 16, "authToken": "limits-twilio-token", "fromNumber": "+15005550006"}
SMS = {"body": "Hi {{ contact.firstName }}, 20% off today. Reply STOP to opt out."}


@pytest.fixture()
def twilio(committed_db: None) -> Iterator[TwilioEmulator]:
    with TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}) as emulator:
        emulator.latency = 0.05
        yield emulator
        assert emulator.server_errors == []


def _phones(user: User, count: int, prefix: str) -> None:
    db.session.add_all([Contact(user_id=user.id, phone=f"+1415{prefix}{i:05d}", first_name=f"N{i}", attributes={},
                                external_ids={}, consent={"sms": "subscribed"}, consent_sources={})
                        for i in range(count)])
    db.session.commit()


def _two_sms_campaigns(app: Flask, count: int, **account: object) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """One merchant, one Twilio account, two SMS campaigns to different people (`count` each)."""
    with app.app_context():
        user = verified_merchant()
        add_provider_account(user, "sms", {**TWILIO, **account})
        campaigns = []
        for prefix in ("1", "2"):
            _phones(user, count, prefix)
            audience = {"match": "all", "conditions": [
                {"type": "attribute", "field": "phone", "op": "contains", "value": f"+1415{prefix}"}]}
            campaign, _ = campaign_on(user, "sms", SMS, name=f"Campaign {prefix}", audience=audience)
            campaigns.append(campaign.id)
        return user.id, campaigns


def _launch_all(app: Flask, user_id: uuid.UUID, campaign_ids: list[uuid.UUID]) -> None:
    with app.app_context():
        for campaign_id in campaign_ids:
            lifecycle.launch_now(user_id, campaign_id)
        db.session.remove()


def _completed(app: Flask, campaign_ids: list[uuid.UUID]) -> bool:
    with app.app_context():
        done = db.session.scalar(sa.select(sa.func.count()).where(
            Campaign.id.in_(campaign_ids), Campaign.status == "completed"))
        db.session.remove()
        return done == len(campaign_ids)


def _texts(twilio: TwilioEmulator) -> list:
    return twilio.requests_to("/Messages.json", "POST")


def _campaign_of(phone: str) -> str:
    return phone[5]  # +1415<prefix>...


@pytest.mark.slow
def test_two_campaigns_on_one_account_share_its_rate(app, twilio):
    rate = 25
    user_id, campaigns = _two_sms_campaigns(app, 160, messagesPerSecond=rate)
    with processes.worker(app.extensions["celery"], TWILIO_API_BASE_URL=twilio.base_url):
        _launch_all(app, user_id, campaigns)
        processes.wait_until(lambda: _completed(app, campaigns), timeout=60, what="both campaigns to complete")
    texts = sorted(_texts(twilio), key=lambda r: r.at)
    assert Counter(r.form["To"] for r in texts) == Counter({r.form["To"]: 1 for r in texts}) and len(texts) == 320
    # After the first second (the bucket starts full: one second's worth), the account's rate holds
    # for both campaigns together, measured over more than 10 s.
    start, end = texts[0].at + 1.0, texts[-1].at
    steady = [r for r in texts if r.at >= start]
    assert end - start >= 10
    assert rate * 0.9 <= len(steady) / (end - start) <= rate * 1.1
    # Both campaigns sent all along, neither one first and then the other.
    middle = [r for r in texts if start + 4 <= r.at <= start + 6]
    assert set(map(_campaign_of, (r.form["To"] for r in middle))) == {"1", "2"}


@pytest.mark.slow
def test_a_retry_after_from_the_provider_slows_every_campaign_on_the_account(app, twilio):
    user_id, campaigns = _two_sms_campaigns(app, 150)
    with processes.worker(app.extensions["celery"], TWILIO_API_BASE_URL=twilio.base_url):
        _launch_all(app, user_id, campaigns)
        processes.wait_until(lambda: len(_texts(twilio)) >= 60, timeout=30, what="60 texts")
        twilio.rate_limit_next(1, retry_after=2)
        processes.wait_until(lambda: _completed(app, campaigns), timeout=60, what="both campaigns to complete")
    requests = sorted(twilio.requests, key=lambda r: r.at)
    ((refused, status),) = twilio.faults_answered
    assert status == 429
    refused_at = refused.at + twilio.latency  # when the 429 was answered
    # Every sender of the account heeds the hold: after the requests already on their way, nothing
    # reaches Twilio until the 2 s have passed.
    quiet = [r for r in requests if refused_at + 0.4 < r.at < refused_at + 1.9]
    assert quiet == []
    sent = Counter(r.form["To"] for r in _texts(twilio))
    assert len(sent) == 300 and set(sent.values()) <= {1, 2}  # the refused one was tried again
    assert sum(sent.values()) == 301 and {_campaign_of(p) for p in sent} == {"1", "2"}


def test_an_hourly_quota_holds_sends_back_and_the_stats_say_so(app, twilio):
    with app.app_context():
        user = verified_merchant()
        add_provider_account(user, "sms", {**TWILIO, "messagesPerHour": 20})
        _phones(user, 30, "3")
        campaign, channel = campaign_on(user, "sms", SMS)
        user_id, campaign_id, channel_id = user.id, campaign.id, channel.id
    with processes.worker(app.extensions["celery"], TWILIO_API_BASE_URL=twilio.base_url):
        _launch_all(app, user_id, [campaign_id])

        def held_back() -> bool:
            with app.app_context():
                stats = campaign_stats.campaign_stats(user_id, campaign_id)
                db.session.remove()
            return stats.channels[0].problem is not None
        processes.wait_until(held_back, timeout=30, what="the quota to hold sends back")
        with app.app_context():
            stats = campaign_stats.campaign_stats(user_id, campaign_id)
            (shown,) = stats.channels
            assert shown.problem.code == "quota_reached" and "resumes at" in shown.problem.message
            assert (shown.sent_count, shown.ledger["queued"], stats.status) == (20, 10, "running")
            waiting = db.session.scalars(campaign_stats.deliveries_query(user_id, campaign_id, status="queued")).all()
            assert {row.shown_error for row in waiting} == {shown.problem.message}
            db.session.remove()
        assert len(_texts(twilio)) == 20
        # The next hour's window opens (what the clock would do), and beat's sweep finds the channel.
        client = redis_lib.Redis.from_url(TEST_REDIS_URL)
        for key in client.scan_iter("herald:quota:*"):
            client.delete(key)
        client.close()
        with app.app_context():
            sending.reap_and_resume()
            db.session.remove()
        processes.wait_until(lambda: _completed(app, [campaign_id]), timeout=30, what="the campaign to complete")
    assert Counter(r.form["To"] for r in _texts(twilio)) == {f"+14153{i:05d}": 1 for i in range(30)}
    with app.app_context():
        assert campaign_stats.campaign_stats(user_id, campaign_id).channels[0].problem is None
        assert db.session.get(CampaignChannel, channel_id).sent_count == 30
        db.session.remove()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_relay_that_is_down_is_named_in_the_stats_and_recovery_sends_each_once(app, committed_db):
    port = _free_port()
    with app.app_context():
        user = verified_merchant()
        add_contacts(user, 20)
        campaign, _ = email_campaign(user)
        user_id, campaign_id = user.id, campaign.id

    def problem():
        with app.app_context():
            found = campaign_stats.campaign_stats(user_id, campaign_id).channels[0].problem
            db.session.remove()
            return found

    with processes.worker(app.extensions["celery"], SMTP_URL=f"smtp://127.0.0.1:{port}"):
        _launch_all(app, user_id, [campaign_id])
        processes.wait_until(lambda: problem() is not None, timeout=30, what="the stats to show the outage")
        shown = problem()
        assert shown.code == "provider_unavailable" and f"127.0.0.1:{port}" in shown.message
        with app.app_context():
            queued = db.session.scalars(campaign_stats.deliveries_query(user_id, campaign_id)).all()
            assert len(queued) == 20 and {(row.status, row.shown_error) for row in queued} == {("queued", shown.message)}
            db.session.remove()
        sink = SmtpSink(port=port).start()  # the relay is back; the task's retry finds it
        try:
            processes.wait_until(lambda: _completed(app, [campaign_id]), timeout=60, what="the campaign to complete")
        finally:
            sink.stop()
    assert Counter(rcpt for mail in sink.messages for rcpt in mail.recipients) == {
        f"c{i}@example.com": 1 for i in range(20)}
    assert problem() is None
