"""Web push through the send engine against the push-service emulator over real HTTP: VAPID-signed,
aes128gcm-encrypted pushes that the emulator decrypts with each subscription's keys (a real RFC 8291
round trip), tracked click URLs, dead subscriptions pruned, 429s and outages without loss or repeats."""
from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.channels.base import OutgoingMessage
from app.channels.endpoint_guard import EndpointGuard, PinnedAdapter
from app.channels.push import NO_LIVE_SUBSCRIPTIONS, PushSender
from app.config import load_settings
from app.extensions import db
from app.models import (
    Audience,
    Campaign,
    CampaignChannel,
    Contact,
    Delivery,
    PushSubscription,
    User,
)
from app.services import sending
from app.services.rendering import contact_context
from tests.conftest import TEST_ENV
from tests.emulators.push_service import PushServiceEmulator, b64url_decode, vapid_keys
from tests.support.campaigns import EVERYONE, add_contacts, launch, verified_merchant
from tests.support.providers import add_provider_account
from tests.support.tls import server_certificate

BASE = TEST_ENV["PUBLIC_BASE_URL"]
SUBJECT = "mailto:ops@shop.test"
SALE = "https://shop.test/sale?utm_source=push"
PUSH_CONFIG: dict[str, Any] = {"title": "Hi {{ contact.firstName }}", "body": "{{ contact.firstName }}, 20% off today",
                               "url": SALE}


@pytest.fixture()
def push() -> Iterator[PushServiceEmulator]:
    with PushServiceEmulator() as emulator:
        yield emulator


@pytest.fixture()
def keys() -> tuple[str, str]:
    return vapid_keys()


def _merchant(keys: tuple[str, str], **account: str) -> User:
    user = verified_merchant()
    private_key, public_key = keys
    add_provider_account(user, "push", {"vapidPrivateKey": private_key, "vapidPublicKey": public_key,
                                        "subject": SUBJECT, **account})
    return user


def _subscribe(push: PushServiceEmulator, contact: Contact, public_key: str) -> dict[str, Any]:
    """A browser subscription restricted to the merchant's VAPID key, stored on the contact."""
    browser = push.new_subscription(application_server_key=public_key)
    db.session.add(PushSubscription(contact_id=contact.id, endpoint=browser["endpoint"], **browser["keys"]))
    db.session.commit()
    return browser


def _push_contacts(user: User, count: int, prefix: str = "p") -> list[Contact]:
    return add_contacts(user, count, prefix=prefix, push="subscribed")


def _campaign(user: User, config: dict[str, Any] | None = None) -> CampaignChannel:
    campaign = Campaign(user_id=user.id, name="Push sale", config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type="push", config={**PUSH_CONFIG, **(config or {})})
    db.session.add_all([channel, Audience(campaign_id=campaign.id, name="everyone", definition=EVERYONE)])
    db.session.commit()
    launch(user.id, campaign.id)
    return channel


def _rows(channel: CampaignChannel) -> dict[uuid.UUID, Delivery]:
    db.session.expire_all()
    return {row.contact_id: row for row in db.session.scalars(sa.select(Delivery).where(Delivery.channel_id == channel.id))}


def _ledger(channel: CampaignChannel) -> Counter:
    return Counter(row.status for row in _rows(channel).values())


def _payloads(push: PushServiceEmulator, browser: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(item["plaintext"]) for item in push.received_for(browser)]


def _channel(channel: CampaignChannel) -> CampaignChannel:
    db.session.expire_all()
    return db.session.get(CampaignChannel, channel.id)


def _live_subscriptions() -> set[str]:
    db.session.expire_all()
    return set(db.session.scalars(sa.select(PushSubscription.endpoint)))


# --- Through the engine ----------------------------------------------------------------------------

def test_a_push_campaign_reaches_every_browser_encrypted_signed_and_tracked(ctx, push, keys):
    user = _merchant(keys)
    ann, bob, cy, nobody = _push_contacts(user, 4)
    browsers = {ann.id: [_subscribe(push, ann, keys[1]), _subscribe(push, ann, keys[1])],
                bob.id: [_subscribe(push, bob, keys[1])], cy.id: [_subscribe(push, cy, keys[1])]}
    channel = _campaign(user)
    assert _ledger(channel) == {"queued": 3, "skipped": 1}
    assert _rows(channel)[nobody.id].skip_reason == "no_address"

    assert sending.send_channel(channel.id) == 3
    rows = _rows(channel)
    for contact in (ann, bob, cy):
        for browser in browsers[contact.id]:
            (payload,) = _payloads(push, browser)
            assert payload["title"] == f"Hi {contact.first_name}"
            assert payload["body"] == f"{contact.first_name}, 20% off today"
            assert payload["deliveryId"] == str(rows[contact.id].id)
            assert payload["url"].startswith(f"{BASE}/t/c/")
    pushed = push.received
    assert len(pushed) == 4 and push.server_errors == []
    assert {item["vapid"]["sub"] for item in pushed} == {SUBJECT} and {item["vapid"]["k"] for item in pushed} == {keys[1]}
    assert {item["headers"]["Content-Encoding"] for item in pushed} == {"aes128gcm"}
    assert all(item["ttl"] > 0 for item in pushed)
    assert rows[bob.id].provider_message_id.startswith(f"{push.base_url}/m/")

    channel = _channel(channel)
    assert _ledger(channel) == {"delivered": 3, "skipped": 1}
    assert (channel.sent_count, channel.delivered_count, channel.status) == (3, 3, "sent")
    assert db.session.get(Campaign, channel.campaign_id).status == "completed"


def test_the_click_url_redirects_to_the_tagged_original_and_counts_once(ctx, push, keys):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    browser = _subscribe(push, contact, keys[1])
    channel = _campaign(user)
    sending.send_channel(channel.id)
    (payload,) = _payloads(push, browser)
    client = ctx.test_client()
    # UTM tags are added, the one the URL already has is kept as it was.
    tagged = f"{SALE}&utm_medium=push&utm_campaign=push-sale"
    for _ in range(2):
        response = client.get(urlsplit(payload["url"]).path)
        assert (response.status_code, response.headers["Location"]) == (302, tagged)
    channel = _channel(channel)
    assert (channel.clicked_count, channel.opened_count) == (1, 1)
    assert _rows(channel)[contact.id].clicked_at is not None


def test_gone_subscriptions_are_deleted_and_a_contact_with_only_dead_ones_fails(ctx, push, keys):
    user = _merchant(keys)
    some_dead, all_dead = _push_contacts(user, 2)
    gone, live = _subscribe(push, some_dead, keys[1]), _subscribe(push, some_dead, keys[1])
    unknown, also_gone = _subscribe(push, all_dead, keys[1]), _subscribe(push, all_dead, keys[1])
    push.gone(gone)
    push.not_found(unknown)
    push.gone(also_gone)
    channel = _campaign(user)
    assert sending.send_channel(channel.id) == 1

    rows = _rows(channel)
    assert rows[some_dead.id].status == "delivered" and len(_payloads(push, live)) == 1
    assert (rows[all_dead.id].status, rows[all_dead.id].error) == ("failed", NO_LIVE_SUBSCRIPTIONS)
    assert _live_subscriptions() == {live["endpoint"]}
    channel = _channel(channel)
    assert (channel.sent_count, channel.delivered_count, channel.status) == (1, 1, "sent")


def test_a_429_hands_the_rest_back_and_everyone_gets_one_push(ctx, push, keys):
    user = _merchant(keys)
    contacts = _push_contacts(user, 6)
    browsers = [_subscribe(push, contact, keys[1]) for contact in contacts]
    channel = _campaign(user, {"messagesPerSecond": 50})
    push.rate_limit_next(1, retry_after=1)
    assert sending.send_channel(channel.id) == 6
    assert [len(push.received_for(browser)) for browser in browsers] == [1] * 6
    assert len(push.requests_to(method="POST")) == 7  # the refused push, then each browser once
    channel = _channel(channel)
    assert _ledger(channel) == {"delivered": 6} and (channel.sent_count, channel.delivered_count) == (6, 6)


def test_a_429_after_another_browser_took_it_is_retried_in_place(ctx, push, keys):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    with PushServiceEmulator() as other_service:  # e.g. FCM and autopush: one browser on each
        first, second = _subscribe(push, contact, keys[1]), _subscribe(other_service, contact, keys[1])
        other_service.rate_limit_next(1, retry_after=1)
        channel = _campaign(user)
        assert sending.send_channel(channel.id) == 1
        assert len(push.received_for(first)) == 1 and len(other_service.received_for(second)) == 1
        assert len(push.requests) == 1 and len(other_service.requests) == 2
    assert _ledger(channel) == {"delivered": 1}


def test_an_unreachable_push_service_fails_that_row_only(ctx, push, keys):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    browser = _subscribe(push, contact, keys[1])
    channel = _campaign(user)
    push.stop()  # nothing listens on the endpoint's port any more
    sending.send_channel(channel.id)
    row = _rows(channel)[contact.id]
    assert row.status == "failed" and "unavailable" in row.error and "ConnectionError" in row.error
    assert _live_subscriptions() == {browser["endpoint"]}  # not dead, just down: kept
    assert (_channel(channel).sent_count, _channel(channel).status) == (0, "failed")


def test_an_outage_after_another_browser_took_it_is_a_partial_delivery(ctx, push, keys):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    with PushServiceEmulator() as other_service:
        first, second = _subscribe(push, contact, keys[1]), _subscribe(other_service, contact, keys[1])
    # other_service is stopped: the second browser's push service cannot be reached.
    channel = _campaign(user)
    assert sending.send_channel(channel.id) == 1
    assert len(push.received_for(first)) == 1 and _ledger(channel) == {"delivered": 1}
    assert _live_subscriptions() == {first["endpoint"], second["endpoint"]}


@pytest.mark.parametrize(("status", "row_status"), [(503, "failed"), (500, "unknown")])
def test_server_errors(ctx, push, keys, status, row_status):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    _subscribe(push, contact, keys[1])
    channel = _campaign(user)
    push.fail_next(1, status=status)
    # 503: the service did not take it (the row fails, it never holds the channel); 500: it may
    # have stored it before failing, so the outcome is reported unknown and never resent.
    sending.send_channel(channel.id)
    assert _rows(channel)[contact.id].status == row_status
    assert push.received == []


def test_a_push_service_refusal_fails_the_row_with_its_reason(ctx, push, keys):
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    _subscribe(push, contact, vapid_keys()[1])  # subscribed with some other application server key
    channel = _campaign(user)
    sending.send_channel(channel.id)
    row = _rows(channel)[contact.id]
    assert row.status == "failed" and "403" in row.error and "/push/" not in row.error
    assert len(_live_subscriptions()) == 1  # a refusal is no reason to forget the browser


def test_unusable_account_keys_fail_every_row_without_a_request(ctx, push, keys):
    user = _merchant(keys, vapidPublicKey=vapid_keys()[1])
    (contact,) = _push_contacts(user, 1)
    _subscribe(push, contact, keys[1])
    channel = _campaign(user)
    sending.send_channel(channel.id)
    row = _rows(channel)[contact.id]
    assert row.status == "failed" and "does not match vapidPublicKey" in row.error
    assert push.requests == [] and _channel(channel).status == "failed"


# --- The sender on its own -------------------------------------------------------------------------

def _message(user: User, contact: Contact, config: dict[str, Any] | None = None) -> OutgoingMessage:
    channel = _campaign(user, config)
    delivery = _rows(channel)[contact.id]
    return OutgoingMessage(delivery_id=delivery.id, campaign_id=channel.campaign_id, channel_id=channel.id,
                           contact_id=contact.id, user_id=user.id, address="push", contact=contact_context(contact),
                           config=channel.config)


def test_a_pem_private_key_signs_too(ctx, push, keys):
    private_raw = b64url_decode(keys[0])
    pem = ec.derive_private_key(int.from_bytes(private_raw, "big"), ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    user = verified_merchant()
    (contact,) = _push_contacts(user, 1)
    browser = _subscribe(push, contact, keys[1])
    config = {"vapidPrivateKey": pem, "vapidPublicKey": keys[1], "subject": "https://shop.test/contact"}
    with PushSender(config, ctx.config["HERALD_SETTINGS"]) as sender:
        outcome = sender.send(_message(user, contact, {"url": None}))
    assert outcome.accepted and outcome.delivered
    (payload,) = _payloads(push, browser)
    assert "url" not in payload and push.received[0]["vapid"]["sub"] == "https://shop.test/contact"


def test_an_oversized_notification_is_refused_before_any_request(ctx, push, keys):
    user = verified_merchant()
    (contact,) = _push_contacts(user, 1)
    contact.attributes = {"note": "x" * 5000}
    db.session.commit()
    _subscribe(push, contact, keys[1])
    config = {"vapidPrivateKey": keys[0], "subject": SUBJECT}
    with PushSender(config, ctx.config["HERALD_SETTINGS"]) as sender:
        outcome = sender.send(_message(user, contact, {"body": "{{ contact.attributes.note }}"}))
    assert not outcome.accepted and "at most" in outcome.error and push.requests == []


@pytest.mark.parametrize("herald_env", ["development", "production"])
def test_without_an_allowed_network_only_public_https_endpoints_are_called(ctx, push, keys, herald_env):
    user = verified_merchant()
    plain_http, loopback_name, loopback = _push_contacts(user, 3)
    _subscribe(push, plain_http, keys[1])
    for contact, host in ((loopback_name, "localhost"), (loopback, "127.0.0.1")):
        browser = push.new_subscription()
        db.session.add(PushSubscription(contact_id=contact.id, endpoint=f"https://{host}:{push.port}/push/x",
                                        **browser["keys"]))
    db.session.commit()
    # The guard needs no setting to be on: HERALD_ENV left at its default refuses just the same.
    env = {name: value for name, value in TEST_ENV.items()
           if name not in ("PUSH_ALLOWED_PRIVATE_NETWORKS", "ADJUSTABLE_CLOCK", "WEBHOOK_ALLOWED_PRIVATE_NETWORKS")}
    settings = load_settings({**env, "HERALD_ENV": herald_env})
    with PushSender({"vapidPrivateKey": keys[0], "subject": SUBJECT}, settings) as sender:
        refused = [sender.send(_message(user, contact)) for contact in (plain_http, loopback_name, loopback)]
    assert [outcome.accepted for outcome in refused] == [False, False, False]
    assert "not an https URL" in refused[0].error
    assert "localhost is not a public address" in refused[1].error
    assert "127.0.0.1 is not a public address" in refused[2].error
    assert push.requests == []


def test_the_push_goes_to_the_address_that_was_checked(ctx, push, keys, monkeypatch):
    """DNS rebinding: the endpoint's name answers an allowed address when it is checked and another
    one afterwards. (The name is answered here, as no test can steer a real DNS server.)"""
    real_getaddrinfo, lookups = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.push.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"  # nothing listens on .2
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    user = _merchant(keys)
    (contact,) = _push_contacts(user, 1)
    browser = push.new_subscription(application_server_key=keys[1])
    endpoint = browser["endpoint"].replace("127.0.0.1", "rebind.push.test")
    db.session.add(PushSubscription(contact_id=contact.id, endpoint=endpoint, **browser["keys"]))
    db.session.commit()
    with PushSender({"vapidPrivateKey": keys[0], "subject": SUBJECT}, ctx.config["HERALD_SETTINGS"]) as sender:
        outcome = sender.send(_message(user, contact))
    assert outcome.accepted and outcome.delivered, outcome.error
    assert lookups == ["rebind.push.test"]  # looked up once, to check it; connected to that answer
    (request,) = push.requests
    assert request.header("Host") == f"rebind.push.test:{push.port}"
    assert len(push.received_for(browser)) == 1


def test_a_pinned_https_connection_checks_the_certificate_of_the_name(tmp_path):
    ca_bundle, certificate, key = server_certificate(tmp_path, "localhost")
    emulator = PushServiceEmulator()
    emulator.tls_files = (certificate, key)
    with emulator:
        port = emulator.port
        url = f"https://localhost:{port}/push/unknown"
        session = requests.Session()
        session.mount("https://", PinnedAdapter(EndpointGuard([ipaddress.ip_network("127.0.0.1/32")])))
        response = session.post(url, data=b"x", verify=ca_bundle)
        # The certificate names localhost only: the connection to 127.0.0.1 was verified for the name,
        # as a plain connection to the address shows.
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(f"https://127.0.0.1:{port}/push/unknown", data=b"x", verify=ca_bundle)
        (request,) = emulator.requests
    assert response.status_code == 404 and request.header("Host") == f"localhost:{port}"


def test_an_endpoint_that_is_no_url_fails_that_browser_only(ctx, push, keys):
    user = verified_merchant()
    (contact,) = _push_contacts(user, 1)
    browser = _subscribe(push, contact, keys[1])
    db.session.add(PushSubscription(contact_id=contact.id, endpoint="ftp://push.invalid/x", **browser["keys"]))
    db.session.commit()
    with PushSender({"vapidPrivateKey": keys[0], "subject": SUBJECT}, ctx.config["HERALD_SETTINGS"]) as sender:
        outcome = sender.send(_message(user, contact))
    assert outcome.accepted and outcome.delivered and outcome.details["failed"] == ["invalid push endpoint"]
    assert len(push.received_for(browser)) == 1
