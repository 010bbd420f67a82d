"""WhatsApp campaigns end to end: the send engine against the Cloud API emulator over real HTTP,
and Meta's signed status webhooks arriving at Herald's own HTTP server, with committed data."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from werkzeug.wrappers import Request, Response

from app.channels.base import ProviderUnavailable
from app.extensions import db
from app.models import Audience, Campaign, CampaignChannel, Contact, Delivery, User
from app.services import sending
from tests.conftest import TEST_ENV, make_app
from tests.emulators.meta import graph_error
from tests.emulators.whatsapp import (
    DEFAULT_PHONE_NUMBER_ID,
    WhatsAppEmulator,
    hub_signature,
)
from tests.support.campaigns import EVERYONE, launch, verified_merchant
from tests.support.providers import add_provider_account
from tests.support.servers import serving

TOKEN = "EAAG-whatsapp-test-token"
APP_SECRET = TEST_ENV["WHATSAPP_APP_SECRET"]
VERIFY_TOKEN = TEST_ENV["WHATSAPP_VERIFY_TOKEN"]
CONFIG: dict[str, Any] = {"templateName": "order_update", "language": "en_US",
                          "parameters": ["{{ contact.firstName }}", "{{ contact.attributes.code }}"]}
OPTED_OUT_NUMBER = "+14156660000"  # the first of _add_phone_contacts(prefix="+1415666")


class OptOutAwareEmulator(WhatsAppEmulator):
    """Answers Meta's 131050 (the user stopped marketing messages) for the numbers in `stopped`."""

    stopped = frozenset({OPTED_OUT_NUMBER})

    def handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        if body.get("to") in self.stopped:
            return graph_error("(#131050) Unable to deliver the message", 131050, error_data={
                "messaging_product": "whatsapp",
                "details": "This recipient has chosen to stop receiving marketing messages on WhatsApp."})
        return super().handle(request)


@pytest.fixture()
def whatsapp() -> Iterator[WhatsAppEmulator]:
    with OptOutAwareEmulator(tokens={TOKEN}, app_secret=APP_SECRET,
                             templates={"order_update": {"en_US": 2}}) as emulator:
        yield emulator
        assert emulator.server_errors == []


def _pointed_at(app: Flask, base_url: str) -> Any:
    settings = app.config["HERALD_SETTINGS"]
    return dataclasses.replace(settings, api_base_urls={**settings.api_base_urls, "WHATSAPP_API_BASE_URL": base_url})


@pytest.fixture()
def ctx(app: Flask, committed_db: None, whatsapp: WhatsAppEmulator) -> Iterator[Flask]:
    """The session app with its Cloud API base URL on the emulator (settings are frozen: swapped)."""
    original = app.config["HERALD_SETTINGS"]
    app.config["HERALD_SETTINGS"] = _pointed_at(app, whatsapp.base_url)
    try:
        with app.app_context():
            yield app
            db.session.remove()
    finally:
        app.config["HERALD_SETTINGS"] = original


@pytest.fixture()
def hooks_url(ctx: Flask) -> Iterator[str]:
    """Herald itself behind a real HTTP server, so the emulator's signed webhooks reach it."""
    with serving(ctx) as url:
        yield url + "/hooks/whatsapp"


def _add_phone_contacts(user: User, count: int, prefix: str = "+1415555", **consent: str) -> list[Contact]:
    contacts = [Contact(user_id=user.id, phone=f"{prefix}{i:04d}", first_name=f"N{i}", attributes={"code": f"C{i}"},
                        external_ids={}, consent={"whatsapp": "subscribed", **consent}, consent_sources={})
                for i in range(count)]
    db.session.add_all(contacts)
    db.session.flush()
    return contacts


def _whatsapp_campaign(user: User, **config: Any) -> tuple[Campaign, CampaignChannel]:
    add_provider_account(user, "whatsapp", {"phoneNumberId": DEFAULT_PHONE_NUMBER_ID, "accessToken": TOKEN,
                                            **config.pop("account", {})})
    campaign = Campaign(user_id=user.id, name="Order updates", config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type="whatsapp", config={**CONFIG, **config})
    db.session.add_all([channel, Audience(campaign_id=campaign.id, name="everyone", definition=EVERYONE)])
    db.session.commit()
    return campaign, channel


def _launched(contacts: int = 3, **config: Any) -> tuple[User, Campaign, CampaignChannel, list[Contact]]:
    user = verified_merchant()
    people = _add_phone_contacts(user, contacts)
    campaign, channel = _whatsapp_campaign(user, **config)
    launch(user.id, campaign.id)
    return user, campaign, channel, people


def _ledger(campaign_id: uuid.UUID) -> Counter:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(Delivery.status).where(Delivery.campaign_id == campaign_id)))


def _delivery(contact: Contact) -> Delivery:
    db.session.expire_all()
    return db.session.scalars(sa.select(Delivery).where(Delivery.contact_id == contact.id)).one()


def _channel(channel: CampaignChannel) -> CampaignChannel:
    db.session.expire_all()
    return db.session.get(CampaignChannel, channel.id)


def _sent_to(whatsapp: WhatsAppEmulator) -> Counter:
    return Counter(message["to"] for message in whatsapp.messages)


# --- Sending -------------------------------------------------------------------------------------

def test_campaign_sends_rendered_templates_to_subscribed_phones(ctx, whatsapp):
    user = verified_merchant()
    people = _add_phone_contacts(user, 3)
    _add_phone_contacts(user, 1, prefix="+1415777", whatsapp="unsubscribed")
    db.session.add(Contact(user_id=user.id, email="no-phone@example.com", attributes={}, external_ids={},
                           consent={"email": "subscribed"}, consent_sources={}))
    campaign, channel = _whatsapp_campaign(user)
    launch(user.id, campaign.id)

    assert sending.send_channel(channel.id) == 3
    assert _ledger(campaign.id) == {"sent": 3, "skipped": 2}
    channel = _channel(channel)
    assert (channel.sent_count, channel.delivered_count, channel.status) == (3, 0, "sent")
    messages = {m["to"]: m for m in whatsapp.messages}
    assert set(messages) == {p.phone for p in people}  # E.164 with its plus sign, as Meta recommends
    first = messages[people[0].phone]["payload"]
    assert first["template"] == {"name": "order_update", "language": {"code": "en_US"}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "N0"}, {"type": "text", "text": "C0"}]}]}
    assert _delivery(people[0]).provider_message_id == messages[people[0].phone]["id"]
    (path,) = {r.path for r in whatsapp.requests}
    assert path == f"/v21.0/{DEFAULT_PHONE_NUMBER_ID}/messages"
    assert {r.header("Authorization") for r in whatsapp.requests} == {f"Bearer {TOKEN}"}


def test_a_template_without_parameters_sends_no_components(ctx):
    with WhatsAppEmulator(tokens={TOKEN}, templates={"hello_world": {"en_US": 0}}) as bare:
        ctx.config["HERALD_SETTINGS"] = _pointed_at(ctx, bare.base_url)
        _, campaign, channel, _ = _launched(1, templateName="hello_world", parameters=[])
        sending.send_channel(channel.id)
        (message,) = bare.messages
    assert "components" not in message["payload"]["template"]
    assert _ledger(campaign.id) == {"sent": 1}


def test_messages_per_second_is_honoured(ctx, whatsapp):
    _, campaign, channel, _ = _launched(8, messagesPerSecond=5)
    started = time.monotonic()
    sending.send_channel(channel.id)
    # A one-second burst of 5, then one message every 0.2 s.
    assert time.monotonic() - started >= 0.5
    assert _ledger(campaign.id) == {"sent": 8} and set(_sent_to(whatsapp).values()) == {1}


@pytest.mark.parametrize("status", [400, 429])
def test_throttled_sends_go_out_later_once_each(ctx, whatsapp, status):
    whatsapp.rate_limit_status = status  # Meta answers 400 + code 130429; gateways may answer 429
    _, campaign, channel, people = _launched(5)
    whatsapp.rate_limit_next(1, retry_after=1)
    started = time.monotonic()
    assert sending.send_channel(channel.id) == 5
    assert time.monotonic() - started >= 0.9  # the sender held off before trying again
    assert _ledger(campaign.id) == {"sent": 5}
    assert _sent_to(whatsapp) == Counter({p.phone: 1 for p in people})
    assert len(whatsapp.requests) == 6 and _channel(channel).sent_count == 5


def test_opted_out_recipient_is_unsubscribed_by_the_provider(ctx, whatsapp):
    user = verified_merchant()
    people = _add_phone_contacts(user, 2)
    (stopped,) = _add_phone_contacts(user, 1, prefix="+1415666")
    campaign, channel = _whatsapp_campaign(user)
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    assert _ledger(campaign.id) == {"sent": 2, "failed": 1}
    assert "131050" in _delivery(stopped).error
    contact = db.session.get(Contact, stopped.id)
    assert (contact.consent["whatsapp"], contact.consent_sources["whatsapp"]) == ("unsubscribed", "provider")
    assert db.session.get(Contact, people[0].id).consent["whatsapp"] == "subscribed"


def test_a_bad_token_fails_the_rows_after_the_first_answer(ctx, whatsapp):
    user = verified_merchant()
    _add_phone_contacts(user, 40)
    campaign, channel = _whatsapp_campaign(user, account={"accessToken": "expired-token", "maxInFlight": 4})
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    assert _ledger(campaign.id) == {"failed": 40}
    errors = set(db.session.scalars(sa.select(Delivery.error).where(Delivery.campaign_id == campaign.id)))
    assert len(errors) == 1 and errors.pop().startswith("WhatsApp error 190")
    # The refusal came from the provider, and only the messages already in flight when it came back
    # (the account's maxInFlight, 4) were sent into it: the other 36 failed unsent.
    sent = len(whatsapp.requests)
    assert sent > 0, "the provider refused the token"
    assert sent <= 4, f"{sent} requests sent after a refusal with at most 4 in flight"
    assert _channel(channel).status == "failed"


def test_a_server_error_is_reported_unknown_and_never_resent(ctx, whatsapp):
    _, campaign, channel, _ = _launched(3)
    whatsapp.fail_next(1, status=500)
    sending.send_channel(channel.id)
    assert _ledger(campaign.id) == {"unknown": 1, "sent": 2}
    assert len(whatsapp.requests) == 3


class SlowEmulator(WhatsAppEmulator):
    """Takes the message, then answers too late."""

    def handle(self, request: Request) -> Response:
        answer = super().handle(request)
        time.sleep(0.5)
        return answer


def test_an_answer_that_never_comes_is_unknown_not_resent(ctx, monkeypatch):
    monkeypatch.setattr("app.channels.whatsapp.TIMEOUT", (5.0, 0.2))
    with SlowEmulator(tokens={TOKEN}) as slow:
        ctx.config["HERALD_SETTINGS"] = _pointed_at(ctx, slow.base_url)
        _, campaign, channel, _ = _launched(2)
        assert sending.send_channel(channel.id) == 0
        assert len(slow.messages) == 2  # Meta has them: reporting them unsent would be wrong
    assert _ledger(campaign.id) == {"unknown": 2}
    errors = db.session.scalars(sa.select(Delivery.error).where(Delivery.campaign_id == campaign.id)).all()
    assert all("WhatsAppOutcomeUnknown" in error for error in errors)


def test_an_unreachable_api_leaves_the_rows_queued(ctx):
    # Nothing listens on port 1: the connection is refused before anything is sent.
    ctx.config["HERALD_SETTINGS"] = _pointed_at(ctx, "http://127.0.0.1:1")
    _, campaign, channel, _ = _launched(3)
    with pytest.raises(ProviderUnavailable):
        sending.send_channel(channel.id)
    assert _ledger(campaign.id) == {"queued": 3}


# --- Status webhooks -----------------------------------------------------------------------------

def test_statuses_count_once_however_often_they_arrive(ctx, whatsapp, hooks_url):
    _, campaign, channel, people = _launched(4)
    sending.send_channel(channel.id)
    wamid = {m["to"]: m["id"] for m in whatsapp.messages}
    delivered, read, failed, sent_only = (wamid[p.phone] for p in people)
    for _ in range(2):
        assert whatsapp.send_status(hooks_url, delivered, "delivered") == 200
        assert whatsapp.send_status(hooks_url, read, "delivered") == 200
        assert whatsapp.send_status(hooks_url, read, "read") == 200
        assert whatsapp.send_status(hooks_url, failed, "failed") == 200
        assert whatsapp.send_status(hooks_url, sent_only, "sent") == 200
    channel = _channel(channel)
    assert (channel.sent_count, channel.delivered_count, channel.opened_count) == (4, 2, 1)
    assert _ledger(campaign.id) == {"delivered": 2, "failed": 1, "sent": 1}
    assert _delivery(people[1]).opened_at is not None
    assert _delivery(people[2]).error == "WhatsApp error 131026: Message undeliverable (Message Undeliverable.)"


def test_a_read_receipt_alone_counts_the_delivery_and_the_open(ctx, whatsapp, hooks_url):
    _, campaign, channel, _ = _launched(1)
    sending.send_channel(channel.id)
    (message,) = whatsapp.messages
    assert whatsapp.send_status(hooks_url, message["id"], "read") == 200
    channel = _channel(channel)
    assert (channel.delivered_count, channel.opened_count) == (1, 1)
    assert _ledger(campaign.id) == {"delivered": 1}


def test_one_webhook_applies_every_status_of_every_entry(ctx, whatsapp, hooks_url):
    channel = _launched(3)[2]
    sending.send_channel(channel.id)
    first, second, third = (m["id"] for m in whatsapp.messages)
    payload = whatsapp.status_payload(first, "delivered")
    payload["entry"][0]["changes"][0]["value"]["statuses"].append(
        whatsapp.status_payload(second, "read")["entry"][0]["changes"][0]["value"]["statuses"][0])
    payload["entry"].append(whatsapp.status_payload(third, "delivered")["entry"][0])
    payload["entry"][0]["changes"][0]["value"]["messages"] = [{"from": "14155550000", "type": "text"}]
    assert whatsapp.post_webhook(hooks_url, payload) == 200
    assert _channel(channel).delivered_count == 3 and _channel(channel).opened_count == 1


def test_an_opt_out_reported_by_webhook_unsubscribes_the_contact(ctx, whatsapp, hooks_url):
    _, campaign, channel, people = _launched(1)
    sending.send_channel(channel.id)
    (message,) = whatsapp.messages
    errors = [{"code": 131050, "title": "Unable to deliver the message",
               "error_data": {"details": "The user stopped marketing messages."}}]
    assert whatsapp.send_status(hooks_url, message["id"], "failed", errors=errors) == 200
    assert _ledger(campaign.id) == {"failed": 1}
    contact = db.session.get(Contact, people[0].id)
    assert (contact.consent["whatsapp"], contact.consent_sources["whatsapp"]) == ("unsubscribed", "provider")


def test_forged_or_unsigned_webhooks_change_nothing(ctx, whatsapp, hooks_url):
    _, campaign, channel, _ = _launched(1)
    sending.send_channel(channel.id)
    (message,) = whatsapp.messages
    with WhatsAppEmulator(app_secret="someone-elses-secret") as forger:
        assert forger.send_status(hooks_url, message["id"], "read") == 403
    raw = json.dumps(whatsapp.status_payload(message["id"], "delivered")).encode()
    unsigned = requests.post(hooks_url, data=raw, headers={"Content-Type": "application/json"}, timeout=5)
    tampered = requests.post(hooks_url, data=raw + b" ", timeout=5,
                             headers={"X-Hub-Signature-256": hub_signature(APP_SECRET, raw)})
    assert (unsigned.status_code, tampered.status_code) == (403, 403)
    assert _ledger(campaign.id) == {"sent": 1} and _channel(channel).delivered_count == 0


def test_without_an_app_secret_every_webhook_is_refused(app):
    unconfigured = make_app(WHATSAPP_APP_SECRET="", WHATSAPP_VERIFY_TOKEN="")
    raw = b'{"object": "whatsapp_business_account", "entry": []}'
    client = unconfigured.test_client()
    response = client.post("/hooks/whatsapp", data=raw, headers={"X-Hub-Signature-256": hub_signature("", raw)})
    assert response.status_code == 403
    handshake = client.get("/hooks/whatsapp", query_string={"hub.mode": "subscribe", "hub.verify_token": "",
                                                            "hub.challenge": "42"})
    assert handshake.status_code == 403


def test_a_signed_body_that_is_not_json_is_a_client_error(app):
    raw = b"not json"
    response = app.test_client().post("/hooks/whatsapp", data=raw,
                                      headers={"X-Hub-Signature-256": hub_signature(APP_SECRET, raw)})
    assert response.status_code == 400


def test_the_subscription_handshake(ctx, whatsapp, hooks_url):
    assert whatsapp.verify_challenge(hooks_url, VERIFY_TOKEN, challenge="1158201444") == (200, "1158201444")
    assert whatsapp.verify_challenge(hooks_url, "wrong-token", challenge="1158201444")[0] == 403
    wrong_mode = requests.get(hooks_url, timeout=5, params={"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN,
                                                             "hub.challenge": "1"})
    assert wrong_mode.status_code == 403
    answer = requests.get(hooks_url, timeout=5, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                                         "hub.challenge": "77"})
    assert answer.headers["Content-Type"].startswith("text/plain")
