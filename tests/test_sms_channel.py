"""SMS campaigns through the send engine into a Twilio emulator over real HTTP, with real PostgreSQL
and Redis, and Twilio's signed status callbacks delivered to the app served on a real port."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.wrappers import Request, Response

from app.channels import sms
from app.channels.base import ProviderUnavailable
from app.extensions import db
from app.models import Audience, Campaign, CampaignChannel, Contact, Delivery, User
from app.services import sending
from tests.emulators.twilio import TwilioEmulator, twilio_signature
from tests.support.campaigns import EVERYONE, launch, verified_merchant
from tests.support.providers import add_provider_account
from tests.support.servers import serving

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "herald-test-twilio-token"
FROM_NUMBER = "+15005550006"
SERVICE_SID = "MG" + "0" * 32
ACCOUNT = {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "fromNumber": FROM_NUMBER}
BODY = "Hi {{ contact.firstName }}, 20% off today. Reply STOP to opt out."


# --- Fixtures ----------------------------------------------------------------------------------

@pytest.fixture()
def herald_url(app: Flask) -> Iterator[str]:
    """The app on a real port, so the emulator's callbacks arrive over HTTP as Twilio's would."""
    with serving(app) as url:
        yield url


@contextmanager
def _configured(app: Flask, **changes: Any) -> Iterator[None]:
    """Swap the app's frozen settings for this test (the session app is shared)."""
    settings = app.config["HERALD_SETTINGS"]
    app.config["HERALD_SETTINGS"] = dataclasses.replace(settings, **changes)
    try:
        yield
    finally:
        app.config["HERALD_SETTINGS"] = settings


def _twilio_at(app: Flask, base_url: str) -> dict[str, dict[str, str]]:
    return {"api_base_urls": {**app.config["HERALD_SETTINGS"].api_base_urls, "TWILIO_API_BASE_URL": base_url}}


@pytest.fixture()
def twilio(ctx: Flask, herald_url: str) -> Iterator[TwilioEmulator]:
    with TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}) as emulator:
        with _configured(ctx, public_base_url=herald_url, **_twilio_at(ctx, emulator.base_url)):
            yield emulator
        assert emulator.server_errors == []


# --- Helpers -----------------------------------------------------------------------------------

def _merchant(account: dict[str, str] | None = None) -> User:
    user = verified_merchant()
    add_provider_account(user, "sms", account or ACCOUNT)
    return user


def _phone(index: int, prefix: str = "1") -> str:
    return f"+1415{prefix}{index:06d}"


def _contacts(user: User, count: int, prefix: str = "1", **consent: str) -> list[Contact]:
    contacts = [Contact(user_id=user.id, phone=_phone(i, prefix), first_name=f"N{i}", attributes={},
                        external_ids={}, consent={"sms": "subscribed", **consent}, consent_sources={})
                for i in range(count)]
    db.session.add_all(contacts)
    db.session.commit()
    return contacts


def _sms_campaign(user: User, **config: Any) -> tuple[Campaign, CampaignChannel]:
    campaign = Campaign(user_id=user.id, name="Flash sale", config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type="sms", config={"body": BODY, **config})
    db.session.add_all([channel, Audience(campaign_id=campaign.id, name="everyone", definition=EVERYONE)])
    db.session.commit()
    launch(user.id, campaign.id)
    return campaign, channel


def _ledger(campaign: Campaign) -> Counter:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign.id)))


def _rows(campaign: Campaign) -> dict[str, Delivery]:
    db.session.expire_all()
    rows = db.session.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign.id))
    return {row.address: row for row in rows}


def _channel(channel: CampaignChannel) -> CampaignChannel:
    db.session.expire_all()
    return db.session.get(CampaignChannel, channel.id)


def _texted(emulator: TwilioEmulator) -> Counter:
    return Counter(message["to"] for message in emulator.messages)


def _callback(ctx: Flask, params: dict[str, str], signature: str | None):
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    return ctx.test_client().post("/hooks/twilio/status", data=params, headers=headers)


# --- Sending -----------------------------------------------------------------------------------

def test_a_campaign_texts_each_subscribed_contact_once(ctx, twilio, herald_url):
    user = _merchant()
    _contacts(user, 5)
    _contacts(user, 1, prefix="2", sms="unsubscribed")
    db.session.add(Contact(user_id=user.id, email="no-phone@example.com", attributes={}, external_ids={},
                           consent={"email": "subscribed"}, consent_sources={}))
    db.session.commit()
    campaign, channel = _sms_campaign(user)
    assert sending.send_channel(channel.id) == 5

    assert _ledger(campaign) == {"sent": 5, "skipped": 2}
    assert (_channel(channel).sent_count, _channel(channel).delivered_count) == (5, 0)
    assert _texted(twilio) == {_phone(i): 1 for i in range(5)}
    first = next(m for m in twilio.messages if m["to"] == _phone(0))
    assert first["body"] == "Hi N0, 20% off today. Reply STOP to opt out."
    assert (first["from"], first["status_callback"]) == (FROM_NUMBER, f"{herald_url}/hooks/twilio/status")
    rows = _rows(campaign)
    assert {rows[m["to"]].provider_message_id for m in twilio.messages} == {m["sid"] for m in twilio.messages}
    assert _channel(channel).status == "sent"


def test_a_messaging_service_sends_instead_of_a_number(ctx, twilio):
    user = _merchant({"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "messagingServiceSid": SERVICE_SID})
    _contacts(user, 2)
    campaign, channel = _sms_campaign(user)
    sending.send_channel(channel.id)
    (request, _) = twilio.requests_to("/Messages.json", "POST")
    assert request.form["MessagingServiceSid"] == SERVICE_SID and "From" not in request.form
    assert request.header("Authorization").startswith("Basic ")
    assert _ledger(campaign) == {"sent": 2}


def test_an_opted_out_recipient_becomes_unsubscribed(ctx, twilio):
    user = _merchant()
    contacts = _contacts(user, 3)
    twilio.opt_out(_phone(1))
    campaign, channel = _sms_campaign(user)
    assert sending.send_channel(channel.id) == 2
    row = _rows(campaign)[_phone(1)]
    assert row.status == "failed" and row.error == "Twilio error 21610: Attempt to send to unsubscribed recipient"
    stopped = db.session.get(Contact, contacts[1].id)
    assert (stopped.consent["sms"], stopped.consent_sources["sms"]) == ("unsubscribed", "provider")
    assert _channel(channel).sent_count == 2

    second, channel = _sms_campaign(user)  # the next campaign skips them before asking Twilio
    sending.send_channel(channel.id)
    assert _rows(second)[_phone(1)].skip_reason == "consent_unsubscribed"


def test_an_invalid_number_fails_with_twilios_reason(ctx, twilio):
    user = _merchant()
    db.session.add(Contact(user_id=user.id, phone="555-0100", attributes={}, external_ids={},
                           consent={"sms": "subscribed"}, consent_sources={}))
    db.session.commit()
    campaign, channel = _sms_campaign(user)
    assert sending.send_channel(channel.id) == 0
    assert _rows(campaign)["555-0100"].error == "Twilio error 21211: Invalid 'To' Phone Number: 555-0100"
    assert _channel(channel).status == "failed"


def test_rate_limited_messages_are_sent_later_once_each(ctx, twilio):
    user = _merchant()
    _contacts(user, 30)
    twilio.rate_limit_next(2, retry_after=1)
    campaign, channel = _sms_campaign(user)
    started = time.monotonic()
    assert sending.send_channel(channel.id) == 30
    # A 429 holds the account's senders for its Retry-After (1 s); the rows it refused go back to
    # the queue. Two 429s answered at once hold the account once, not twice in a row.
    assert time.monotonic() - started >= 0.95
    assert _texted(twilio) == {_phone(i): 1 for i in range(30)}
    assert len(twilio.requests_to("/Messages.json", "POST")) == 32
    assert _ledger(campaign) == {"sent": 30} and _channel(channel).sent_count == 30


def _send_in_thread(app: Flask, channel_id) -> None:
    with app.app_context():
        sending.send_channel(channel_id)
        db.session.remove()


def test_messages_per_second_is_shared_by_every_sender(ctx, twilio):
    user = _merchant()
    _contacts(user, 30)
    campaign, channel = _sms_campaign(user, messagesPerSecond=10)
    started = time.monotonic()
    senders = [threading.Thread(target=_send_in_thread, args=(ctx, channel.id)) for _ in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=60)
    # 30 messages at 10/s with a one-second burst: at least ~2 s whoever sends them.
    assert time.monotonic() - started >= 1.9
    assert _texted(twilio) == {_phone(i): 1 for i in range(30)} and _ledger(campaign) == {"sent": 30}


def test_an_unreachable_twilio_leaves_every_row_queued(ctx):
    user = _merchant()
    _contacts(user, 4)
    campaign, channel = _sms_campaign(user)
    with _configured(ctx, **_twilio_at(ctx, "http://127.0.0.1:1")), pytest.raises(ProviderUnavailable):
        sending.send_channel(channel.id)  # nothing listens on port 1
    assert _ledger(campaign) == {"queued": 4}


def test_refused_credentials_leave_every_row_queued(ctx, twilio):
    user = _merchant({**ACCOUNT, "authToken": "not-the-token"})
    _contacts(user, 4)
    campaign, channel = _sms_campaign(user)
    with pytest.raises(ProviderUnavailable):
        sending.send_channel(channel.id)
    assert _ledger(campaign) == {"queued": 4} and twilio.messages == []
    assert "Twilio error 20003" in _rows(campaign)[_phone(0)].error


def test_a_server_error_is_unknown_and_never_resent(ctx, twilio):
    user = _merchant()
    _contacts(user, 6)
    twilio.fail_next(1, status=500)
    campaign, channel = _sms_campaign(user)
    assert sending.send_channel(channel.id) == 5
    assert _ledger(campaign) == {"unknown": 1, "sent": 5}
    unknown = next(row for row in _rows(campaign).values() if row.status == "unknown")
    assert unknown.error.startswith("SmsOutcomeUnknown: Twilio error 20500")
    assert unknown.address not in _texted(twilio) and len(twilio.messages) == 5


def test_an_outage_costs_the_rows_in_flight_and_the_rest_wait(ctx, twilio):
    user = _merchant(account={**ACCOUNT, "maxInFlight": 4})
    _contacts(user, 40)
    twilio.fail_next(1000, status=503)
    campaign, channel = _sms_campaign(user)
    with pytest.raises(ProviderUnavailable):
        sending.send_channel(channel.id)
    # A 5xx may hide a created message: the rows that went out are unknown, never resent. After a
    # few of those in a row the sender stops handing messages over: the rest wait. What went out is
    # what was in flight, plus what refilled the slots of the first answers before the limit.
    ledger = _ledger(campaign)
    most = 4 + sms.UNKNOWN_IN_A_ROW_LIMIT - 1
    assert sms.UNKNOWN_IN_A_ROW_LIMIT <= ledger["unknown"] <= most and ledger["queued"] == 40 - ledger["unknown"]
    assert len(twilio.requests_to("/Messages.json", "POST")) == ledger["unknown"]
    twilio.clear_faults()  # Twilio is back: only the queued rows go
    assert sending.send_channel(channel.id) == ledger["queued"]
    assert _ledger(campaign) == {"unknown": ledger["unknown"], "sent": ledger["queued"]}
    assert sum(_texted(twilio).values()) == ledger["queued"]


class _SlowFirstAnswer(TwilioEmulator):
    """Creates the first message but answers after the client stopped waiting."""

    def handle(self, request: Request) -> Response:
        answer = super().handle(request)
        with self.lock:
            first, self.slow = getattr(self, "slow", True), False
        if first:
            time.sleep(0.5)
        return answer


def test_a_read_timeout_is_unknown_because_twilio_may_have_the_message(ctx, monkeypatch):
    monkeypatch.setattr(sms, "TIMEOUTS", (5.0, 0.2))
    user = _merchant()
    _contacts(user, 3)
    campaign, channel = _sms_campaign(user)
    with _SlowFirstAnswer(accounts={ACCOUNT_SID: AUTH_TOKEN}) as emulator:
        with _configured(ctx, **_twilio_at(ctx, emulator.base_url)):
            assert sending.send_channel(channel.id) == 2
        assert len(emulator.messages) == 3  # the timed-out one was created: resending would double it
    assert _ledger(campaign) == {"unknown": 1, "sent": 2}


# --- Status callbacks --------------------------------------------------------------------------

def _sent_campaign(user: User, count: int, twilio: TwilioEmulator) -> tuple[Campaign, CampaignChannel, list[str]]:
    _contacts(user, count)
    campaign, channel = _sms_campaign(user)
    sending.send_channel(channel.id)
    return campaign, channel, [message["sid"] for message in twilio.messages]


def test_delivered_callbacks_count_each_message_once(ctx, twilio):
    campaign, channel, sids = _sent_campaign(_merchant(), 3, twilio)
    for sid in sids:
        assert twilio.deliver_status(sid, "sent") == 200
        assert twilio.deliver_status(sid, "delivered") == 200
    assert twilio.deliver_status(sids[0], "delivered") == 200  # Twilio repeats itself sometimes
    assert _ledger(campaign) == {"delivered": 3}
    channel = _channel(channel)
    assert (channel.sent_count, channel.delivered_count) == (3, 3)
    assert all(row.delivered_at is not None for row in _rows(campaign).values())


class _ReportsBeforeAnswering(TwilioEmulator):
    """Calls `delivered` back before it even answers the create: the receipt beats the ledger."""

    def _create(self, account: str, form: dict[str, str]) -> Response:
        answer = super()._create(account, form)
        if answer.status_code == 201:
            assert self.deliver_status(json.loads(answer.get_data())["sid"], "delivered") == 200
        return answer


def test_a_receipt_that_beats_the_ledger_counts_once_recorded(ctx, herald_url):
    user = _merchant()
    _contacts(user, 3)
    campaign, channel = _sms_campaign(user)
    with _ReportsBeforeAnswering(accounts={ACCOUNT_SID: AUTH_TOKEN}) as emulator:
        with _configured(ctx, public_base_url=herald_url, **_twilio_at(ctx, emulator.base_url)):
            assert sending.send_channel(channel.id) == 3
        assert len(emulator.callbacks) == 3 and emulator.server_errors == []
    assert _ledger(campaign) == {"delivered": 3} and _channel(channel).delivered_count == 3


def test_undelivered_is_recorded_failed_with_twilios_error(ctx, twilio):
    campaign, channel, (sid,) = _sent_campaign(_merchant(), 1, twilio)
    assert twilio.deliver_status(sid, "undelivered", error_code=30003) == 200
    assert twilio.deliver_status(sid, "delivered") == 200  # a late, contradicting callback changes nothing
    row = _rows(campaign)[_phone(0)]
    assert (row.status, row.error) == ("failed", "Twilio error 30003: message undelivered")
    channel = _channel(channel)
    assert (channel.sent_count, channel.delivered_count) == (1, 0)  # counters never go backwards


def test_unsigned_or_forged_callbacks_are_refused(ctx, twilio, herald_url):
    campaign, channel, (sid,) = _sent_campaign(_merchant(), 1, twilio)
    params = {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered",
              "To": _phone(0), "From": FROM_NUMBER, "ApiVersion": "2010-04-01"}
    url = f"{herald_url}/hooks/twilio/status"
    forged = [
        twilio_signature("a-guessed-token", url, params),
        twilio_signature(AUTH_TOKEN, "http://localhost/hooks/twilio/status", params),  # the Host we were called on
        twilio_signature(AUTH_TOKEN, url, {**params, "MessageStatus": "sent"}),  # signed for other content
        "", None, "ünïcode",
    ]
    for signature in forged:
        response = _callback(ctx, params, signature)
        assert response.status_code == 403 and response.get_json()["code"] == "forbidden"
    other_account = {**params, "AccountSid": "AC" + "9" * 32}
    assert _callback(ctx, other_account, twilio_signature(AUTH_TOKEN, url, other_account)).status_code == 403
    assert _ledger(campaign) == {"sent": 1} and _channel(channel).delivered_count == 0

    assert _callback(ctx, params, twilio_signature(AUTH_TOKEN, url, params)).status_code == 200
    assert _ledger(campaign) == {"delivered": 1} and _channel(channel).delivered_count == 1


def test_progress_statuses_change_nothing(ctx, twilio):
    campaign, channel, (sid,) = _sent_campaign(_merchant(), 1, twilio)
    for status in ("queued", "sending", "sent"):
        assert twilio.deliver_status(sid, status) == 200
    assert _ledger(campaign) == {"sent": 1} and _channel(channel).delivered_count == 0


def test_the_signature_matches_twilios_reference_vectors():
    # The vectors of twilio-python's RequestValidator tests, a repeated parameter included.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
              ("From", "+14158675309"), ("To", "+18005551212")]
    assert sms.request_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert sms.request_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
