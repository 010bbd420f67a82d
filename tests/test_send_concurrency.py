"""Sending at provider speed, with real worker processes against providers that take their time to
answer (as real ones do): every channel keeps many messages in flight and reaches each recipient
once; a worker killed at full concurrency sends nothing twice; an account's rate limit and a
provider's Retry-After hold across every campaign sending through the account."""
from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app.channels.catalogue import spec
from app.extensions import db
from app.models import (
    Campaign,
    CampaignChannel,
    Contact,
    Delivery,
    PushSubscription,
    User,
)
from app.services import campaign_lifecycle as lifecycle
from tests.emulators.push_service import PushServiceEmulator, vapid_keys
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.whatsapp import DEFAULT_PHONE_NUMBER_ID, WhatsAppEmulator
from tests.support import processes
from tests.support.campaigns import (
    EMAIL_CONFIG,
    add_contacts,
    campaign_on,
    verified_merchant,
)
from tests.support.providers import add_provider_account

LATENCY = 0.1  # seconds each provider takes to answer
TWILIO = {"accountSid": "AC" + "c0" * 16, "authToken": "concurrency-twilio-token", "fromNumber": "+15005550006"}
WHATSAPP_TOKEN = "EAAG-concurrency-token"
CONFIGS: dict[str, dict[str, Any]] = {
    "email": EMAIL_CONFIG,
    "sms": {"body": "Hi {{ contact.firstName }}, 20% off today. Reply STOP to opt out."},
    "whatsapp": {"templateName": "hello_world", "language": "en_US"},
    "push": {"title": "Hi {{ contact.firstName }}", "body": "20% off today"},
}


@dataclass
class Providers:
    twilio: TwilioEmulator
    whatsapp: WhatsAppEmulator
    push: PushServiceEmulator

    def worker_env(self) -> dict[str, str]:
        return {"TWILIO_API_BASE_URL": self.twilio.base_url, "WHATSAPP_API_BASE_URL": self.whatsapp.base_url}


@pytest.fixture()
def providers(committed_db: None) -> Iterator[Providers]:
    with TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}) as twilio, \
            WhatsAppEmulator(tokens={WHATSAPP_TOKEN}) as whatsapp, PushServiceEmulator() as push:
        for emulator in (twilio, whatsapp, push):
            emulator.latency = LATENCY
        yield Providers(twilio, whatsapp, push)
        assert twilio.server_errors == whatsapp.server_errors == push.server_errors == []


def _recipients(user: User, channel_type: str, count: int, providers: Providers) -> list[Any]:
    """`count` contacts reachable on the channel (and, for push, each one's browser subscription)."""
    if channel_type in ("email", "push"):
        people = add_contacts(user, count, push="subscribed")
    else:
        people = [Contact(user_id=user.id, phone=f"+1415{i:07d}", first_name=f"N{i}", attributes={}, external_ids={},
                          consent={channel_type: "subscribed"}, consent_sources={}) for i in range(count)]
        db.session.add_all(people)
    if channel_type != "push":
        db.session.commit()
        return [p.email if channel_type == "email" else p.phone for p in people]
    private_key, public_key = vapid_keys()
    add_provider_account(user, "push", {"vapidPrivateKey": private_key, "vapidPublicKey": public_key,
                                        "subject": "mailto:ops@shop.test"})
    browsers = [providers.push.new_subscription(application_server_key=public_key) for _ in people]
    db.session.add_all([PushSubscription(contact_id=p.id, endpoint=b["endpoint"], **b["keys"])
                        for p, b in zip(people, browsers)])
    db.session.commit()
    return browsers


def _reached(channel_type: str, providers: Providers, smtp_sink, browsers: list[Any]) -> Counter:
    """How many messages each recipient got."""
    if channel_type == "email":
        return Counter(rcpt for mail in smtp_sink.messages for rcpt in mail.recipients)
    if channel_type == "sms":
        return Counter(r.form["To"] for r in providers.twilio.requests_to("/Messages.json", "POST"))
    if channel_type == "whatsapp":
        return Counter(r.json["to"] for r in providers.whatsapp.requests_to("/messages", "POST"))
    return Counter({i: len(providers.push.received_for(b)) for i, b in enumerate(browsers)})


def _peak(channel_type: str, providers: Providers, smtp_sink) -> int:
    if channel_type == "email":
        return smtp_sink.peak_concurrency
    return {"sms": providers.twilio, "whatsapp": providers.whatsapp, "push": providers.push}[channel_type].peak_concurrency


def _status(app: Flask, campaign_id) -> str:
    with app.app_context():
        status = db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))
        db.session.remove()
        return status


def _ledger(app: Flask, campaign_id) -> Counter:
    with app.app_context():
        ledger = Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))
        db.session.remove()
        return ledger


@pytest.mark.parametrize("channel_type", ["email", "sms", "whatsapp", "push"])
def test_every_channel_keeps_messages_in_flight_and_reaches_each_recipient_once(app, providers, smtp_sink,
                                                                                channel_type):
    recipients = 120
    smtp_sink.data_latency = LATENCY
    with app.app_context():
        user = verified_merchant()
        if channel_type == "sms":
            add_provider_account(user, "sms", TWILIO)
        if channel_type == "whatsapp":
            add_provider_account(user, "whatsapp", {"phoneNumberId": DEFAULT_PHONE_NUMBER_ID,
                                                    "accessToken": WHATSAPP_TOKEN})
        addresses = _recipients(user, channel_type, recipients, providers)
        campaign, channel = campaign_on(user, channel_type, CONFIGS[channel_type])
        user_id, campaign_id, channel_id = user.id, campaign.id, channel.id
    with processes.worker(app.extensions["celery"], **providers.worker_env()):
        with app.app_context():
            lifecycle.launch_now(user_id, campaign_id)
        processes.wait_until(lambda: _status(app, campaign_id) == "completed", timeout=90,
                             what="the campaign to complete")
    reached = _reached(channel_type, providers, smtp_sink, addresses)
    assert len(reached) == recipients and set(reached.values()) == {1}
    assert set(_ledger(app, campaign_id)) <= {"sent", "delivered"}
    # One sender worked the channel, with many messages at the provider at once, not one by one.
    in_flight = app.config["HERALD_SETTINGS"].smtp_max_connections if channel_type == "email" \
        else spec(channel_type).in_flight
    assert in_flight // 2 <= _peak(channel_type, providers, smtp_sink) <= in_flight
    with app.app_context():
        channel = db.session.get(CampaignChannel, channel_id)
        assert channel.sent_count == recipients and channel.status == "sent"
        db.session.remove()


@pytest.mark.slow
def test_a_worker_killed_at_full_concurrency_sends_nothing_twice(app, providers):
    recipients = 600
    with app.app_context():
        user = verified_merchant()
        add_provider_account(user, "sms", TWILIO)
        _recipients(user, "sms", recipients, providers)
        campaign, channel = campaign_on(user, "sms", CONFIGS["sms"])
        user_id, campaign_id, channel_id = user.id, campaign.id, channel.id
    # A request cut off mid-body by the kill created no message (its form never arrived whole).
    texted = lambda: [r for r in providers.twilio.requests_to("/Messages.json", "POST") if "To" in r.form]  # noqa: E731
    env = {**providers.worker_env(), "SEND_LEASE_SECONDS": "2"}
    with processes.worker(app.extensions["celery"], **env) as doomed:
        with app.app_context():
            lifecycle.launch_now(user_id, campaign_id)
        processes.wait_until(lambda: len(texted()) >= 150, timeout=60, what="150 texts")
        processes.kill_group(doomed, signal.SIGKILL)  # two pool processes, each with 16 messages in flight
    killed_at = len(texted())
    assert killed_at < recipients, "the send finished before the worker could be killed"

    with processes.worker(app.extensions["celery"], **env):
        processes.reap_until_completed(app, campaign_id)

    ledger = _ledger(app, campaign_id)
    reached = Counter(r.form["To"] for r in texted())
    assert set(reached.values()) == {1}, "a phone got two texts"
    assert set(ledger) <= {"sent", "unknown"} and sum(ledger.values()) == recipients
    # Every recipient is sent or reported unknown; unknown is at most what the killed pool
    # processes had in flight (two processes, 16 each).
    assert ledger["sent"] <= len(reached) <= ledger["sent"] + ledger["unknown"]
    assert ledger["unknown"] <= 2 * spec("sms").in_flight
    with app.app_context():
        assert db.session.get(CampaignChannel, channel_id).sent_count == ledger["sent"]
        db.session.remove()
