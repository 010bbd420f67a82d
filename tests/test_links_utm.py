"""UTM tags on tracked links (never replacing a parameter the link has; off per campaign or for the
merchant), and short links in SMS and WhatsApp messages: sent by a real worker to the provider
emulators, followed over real HTTP, a click counted once, a forged code a 404."""
from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask

from app.extensions import db
from app.models import Campaign, CampaignChannel, Contact, Delivery, MessageLink, User
from app.security.short_codes import CODE_LENGTH, ShortCodes, short_codes
from app.services import campaign_lifecycle, sending, settings, utm
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.whatsapp import DEFAULT_PHONE_NUMBER_ID, WhatsAppEmulator
from tests.support import processes
from tests.support.accounts import signed_in
from tests.support.campaigns import add_contacts, campaign_on, launch, verified_merchant
from tests.support.providers import add_provider_account
from tests.support.servers import serving
from tests.test_email_channel import tracked_links

TAGS = {"utm_source": "herald", "utm_medium": "email", "utm_campaign": "winter-sale"}
LINKS_HTML = ('<html><body><a href="https://shop.test/sale?utm_source=newsletter&amp;ref=a%20b#top">Sale</a>'
              '<a href="https://shop.test/new">New</a></body></html>')
SALE_TAGGED = "https://shop.test/sale?utm_source=newsletter&ref=a%20b&utm_medium=email&utm_campaign=winter-sale#top"
NEW_TAGGED = "https://shop.test/new?utm_source=herald&utm_medium=email&utm_campaign=winter-sale"
ACCOUNT_SID, AUTH_TOKEN = "AC" + "7a" * 16, "herald-test-twilio-token"
SMS_BODY = "Hi {{ contact.firstName }}! Winter sale: https://shop.test/collections/winter?color=red&size=m. Reply STOP"
WHATSAPP_TOKEN = "EAAG-whatsapp-test-token"
_SHORT = re.compile(r"(http://127\.0\.0\.1:\d+/l/([A-Za-z0-9_-]+))")


# --- Tags on a URL ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("https://shop.test/sale", "https://shop.test/sale?utm_source=herald&utm_medium=email&utm_campaign=winter-sale"),
    # Present parameters stay as written (any case, even empty); the rest of the URL is untouched.
    ("https://shop.test/p?UTM_Source=ig&ref=a+b&utm_campaign=#reviews",
     "https://shop.test/p?UTM_Source=ig&ref=a+b&utm_campaign=&utm_medium=email#reviews"),
    ("https://shop.test/p?", "https://shop.test/p?utm_source=herald&utm_medium=email&utm_campaign=winter-sale"),
    ("https://shop.test/p?a=1&", "https://shop.test/p?a=1&utm_source=herald&utm_medium=email&utm_campaign=winter-sale"),
    ("https://shop.test/p?utm_source=a&utm_medium=b&utm_campaign=c#x", "https://shop.test/p?utm_source=a&utm_medium=b"
                                                                        "&utm_campaign=c#x"),
])
def test_tags_are_added_without_replacing_what_the_url_has(url, expected):
    assert utm.tagged(url, TAGS) == expected


@pytest.mark.parametrize("name, expected", [
    ("Winter sale", "winter-sale"), ("Été Sale – 20% OFF!", "ete-sale-20-off"), ("Распродажа 2026", "распродажа-2026"),
    ("!!!", "campaign"), ("__x__", "x"),
])
def test_campaign_names_become_slugs(name, expected):
    assert utm.slug(name) == expected


# --- Email links, by the merchant's setting and the campaign's ----------------------------------

def _clicked_targets(ctx: Flask, smtp_sink, campaign_config: dict[str, Any], merchant_utm: dict[str, Any] | None,
                     ) -> set[str]:
    """Send a two-link email campaign to one contact; where its tracked links redirect."""
    user = verified_merchant()
    if merchant_utm is not None:
        settings.update_settings(user.id, {"utm": merchant_utm})
    add_contacts(user, 1)
    campaign, channel = campaign_on(user, "email", {"fromEmail": "news@shop.com", "subject": "Sale",
                                                    "html": LINKS_HTML}, name="Winter sale")
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(config=campaign_config))
    db.session.commit()
    launch(user.id, campaign.id)
    assert sending.send_channel(channel.id) == 1
    (mail,) = smtp_sink.wait_for(1)
    client = ctx.test_client()
    targets = set()
    for token in tracked_links(mail.html())["c"]:
        response = client.get(f"/t/c/{token}")
        assert response.status_code == 302
        targets.add(response.headers["Location"])
    # What is stored is what a click redirects to.
    assert set(db.session.scalars(sa.select(MessageLink.url).where(MessageLink.channel_id == channel.id))) == targets
    return targets


@pytest.mark.parametrize("campaign_config, merchant_utm, expected", [
    ({}, None, {SALE_TAGGED, NEW_TAGGED}),
    ({"utm": False}, None, {"https://shop.test/sale?utm_source=newsletter&ref=a%20b#top", "https://shop.test/new"}),
    ({"utm": {"enabled": False}}, None, {"https://shop.test/sale?utm_source=newsletter&ref=a%20b#top",
                                         "https://shop.test/new"}),
    ({}, {"enabled": False}, {"https://shop.test/sale?utm_source=newsletter&ref=a%20b#top", "https://shop.test/new"}),
    ({"utm": True, "goal": "x"}, {"enabled": False}, {SALE_TAGGED, NEW_TAGGED}),
    ({"utm": {"campaign": "BF 2026"}}, {"source": "shop mails"},
     {"https://shop.test/sale?utm_source=newsletter&ref=a%20b&utm_medium=email&utm_campaign=BF+2026#top",
      "https://shop.test/new?utm_source=shop+mails&utm_medium=email&utm_campaign=BF+2026"}),
], ids=["defaults", "campaign-off", "campaign-disabled", "merchant-off", "campaign-on-over-merchant-off", "overrides"])
def test_email_links_are_tagged_as_the_settings_say(ctx, smtp_sink, campaign_config, merchant_utm, expected):
    assert _clicked_targets(ctx, smtp_sink, campaign_config, merchant_utm) == expected


@pytest.mark.parametrize("utm_value, error", [
    ("off", "Must be true, false or an object"),
    ({"enabled": "yes"}, "Not a valid boolean."),
    ({"medium": "sms"}, "Unknown field."),
    ({"source": ""}, "Length must be between 1 and 100."),
])
def test_a_campaigns_utm_setting_is_validated(client, app_ctx, utm_value, error):
    _, headers = signed_in(client)
    response = client.post("/api/v1/campaigns", headers=headers, json={"name": "Sale", "config": {"utm": utm_value}})
    assert response.status_code == 422
    assert error in str(response.get_json()["errors"]["config"]["utm"])
    assert client.get("/api/v1/campaigns", headers=headers).get_json() == []
    created = client.post("/api/v1/campaigns", headers=headers, json={"name": "Sale", "config": {"utm": False}})
    assert created.status_code == 201 and created.get_json()["config"] == {"utm": False}


# --- SMS short links, sent by a real worker -------------------------------------------------------

@pytest.fixture()
def herald_url(app: Flask) -> Iterator[str]:
    """The app on a real port: PUBLIC_BASE_URL, where short links are followed."""
    with serving(app) as url:
        yield url


@contextmanager
def _configured(app: Flask, **changes: Any) -> Iterator[None]:
    """Swap the frozen settings of the session app, and of the app a worker thread's tasks run in
    (the `workers` module's), for this test."""
    import workers

    apps = {id(app): app, id(workers.flask_app): workers.flask_app}.values()
    originals = [(each, each.config["HERALD_SETTINGS"]) for each in apps]
    for each, original in originals:
        each.config["HERALD_SETTINGS"] = dataclasses.replace(original, **changes)
    try:
        yield
    finally:
        for each, original in originals:
            each.config["HERALD_SETTINGS"] = original


@pytest.fixture()
def twilio(ctx: Flask, herald_url: str) -> Iterator[TwilioEmulator]:
    with TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}) as emulator:
        urls = {**ctx.config["HERALD_SETTINGS"].api_base_urls, "TWILIO_API_BASE_URL": emulator.base_url}
        with _configured(ctx, public_base_url=herald_url, api_base_urls=urls):
            yield emulator
        assert emulator.server_errors == []


def _sms_merchant(count: int) -> tuple[User, list[Contact]]:
    user = verified_merchant()
    add_provider_account(user, "sms", {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "fromNumber": "+15005550006"})
    contacts = [Contact(user_id=user.id, phone=f"+1415200{i:04d}", first_name=f"N{i}", attributes={}, external_ids={},
                        consent={"sms": "subscribed"}, consent_sources={}) for i in range(count)]
    db.session.add_all(contacts)
    db.session.commit()
    return user, contacts


def _channel(channel_id: uuid.UUID) -> CampaignChannel:
    db.session.expire_all()
    return db.session.get(CampaignChannel, channel_id)


def test_sms_links_are_short_and_a_click_counts_once(ctx, twilio, herald_url, celery_worker):
    user, contacts = _sms_merchant(2)
    campaign, channel = campaign_on(user, "sms", {"body": SMS_BODY}, name="Winter sale")
    campaign_lifecycle.launch_now(user.id, campaign.id)
    processes.wait_until(lambda: len(twilio.messages) == 2, timeout=30, what="the worker to text both contacts")

    message = next(m for m in twilio.messages if m["to"] == contacts[0].phone)
    (link, code), = _SHORT.findall(message["body"])
    assert message["body"] == f"Hi N0! Winter sale: {link}. Reply STOP"  # the sentence's full stop stays text
    assert len(link) == len(herald_url) + len("/l/") + CODE_LENGTH and message["num_segments"] == "1"
    destination = "https://shop.test/collections/winter?color=red&size=m&utm_source=herald&utm_medium=sms" \
                  "&utm_campaign=winter-sale"
    assert requests.head(link, allow_redirects=False, timeout=5).status_code == 302  # a preview counts nothing
    assert _channel(channel.id).clicked_count == 0
    for _ in range(2):
        response = requests.get(link, allow_redirects=False, timeout=5)
        assert (response.status_code, response.headers["Location"]) == (302, destination)
        assert response.headers["Referrer-Policy"] == "no-referrer"
    after = _channel(channel.id)
    assert (after.clicked_count, after.opened_count) == (1, 0)
    rows = {row.contact_id: row for row in db.session.scalars(sa.select(Delivery).where(
        Delivery.channel_id == channel.id))}
    assert rows[contacts[0].id].clicked_at is not None and rows[contacts[0].id].opened_at is None
    assert rows[contacts[1].id].clicked_at is None
    # The other contact's link is their own: same destination, another code.
    other = next(m for m in twilio.messages if m["to"] == contacts[1].phone)
    assert _SHORT.findall(other["body"])[0][1] != code


def test_forged_and_foreign_short_codes_are_404(ctx, twilio, herald_url):
    user, (contact,) = _sms_merchant(1)
    campaign, channel = campaign_on(user, "sms", {"body": "Sale: https://shop.test/a"})
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    other_campaign, other_channel = campaign_on(user, "sms", {"body": "Elsewhere: https://elsewhere.test/"},
                                                name="Other")
    launch(user.id, other_campaign.id)
    sending.send_channel(other_channel.id)
    (link, code), = _SHORT.findall(next(m["body"] for m in twilio.messages if m["body"].startswith("Sale")))
    delivery_id = db.session.scalar(sa.select(Delivery.id).where(Delivery.channel_id == channel.id))
    foreign_link = db.session.scalar(sa.select(MessageLink.id).where(MessageLink.channel_id == other_channel.id))
    flipped = code[:12] + ("A" if code[12] != "A" else "B") + code[13:]
    forged = {
        "tampered": flipped,
        "another key": ShortCodes("another-secret-key-" + "x" * 32).code(
            delivery_id, db.session.scalar(sa.select(MessageLink.id).where(MessageLink.channel_id == channel.id))),
        "another channel's link": short_codes().code(delivery_id, foreign_link),
        "unknown delivery": short_codes().code(uuid.uuid4(), foreign_link),
        "too long": code + "A",
        "not a code": "evil.test",
    }
    for case, bad in forged.items():
        response = requests.get(f"{herald_url}/l/{bad}", allow_redirects=False, timeout=5)
        assert response.status_code == 404 and "Location" not in response.headers, case
        assert "text/html" in response.headers["Content-Type"]
    assert _channel(channel.id).clicked_count == 0 and _channel(other_channel.id).clicked_count == 0
    assert requests.get(link, allow_redirects=False, timeout=5).headers["Location"].startswith("https://shop.test/a?")


# --- WhatsApp parameters ----------------------------------------------------------------------------

def test_whatsapp_parameters_carry_short_links(ctx, herald_url):
    with WhatsAppEmulator(tokens={WHATSAPP_TOKEN}, templates={"order_update": {"en_US": 2}}) as emulator:
        urls = {**ctx.config["HERALD_SETTINGS"].api_base_urls, "WHATSAPP_API_BASE_URL": emulator.base_url}
        with _configured(ctx, public_base_url=herald_url, api_base_urls=urls):
            user = verified_merchant()
            add_provider_account(user, "whatsapp", {"phoneNumberId": DEFAULT_PHONE_NUMBER_ID,
                                                    "accessToken": WHATSAPP_TOKEN})
            db.session.add(Contact(user_id=user.id, phone="+14155550100", first_name="Ann", attributes={},
                                   external_ids={}, consent={"whatsapp": "subscribed"}, consent_sources={}))
            campaign, channel = campaign_on(user, "whatsapp", {
                "templateName": "order_update", "language": "en_US",
                "parameters": ["{{ contact.firstName }}", "Track it at https://shop.test/orders?id=7 (today)"]},
                name="Order updates")
            launch(user.id, campaign.id)
            assert sending.send_channel(channel.id) == 1
            (sent,) = emulator.messages
            first, second = sent["payload"]["template"]["components"][0]["parameters"]
            assert first["text"] == "Ann"
            (link, _), = _SHORT.findall(second["text"])
            assert second["text"] == f"Track it at {link} (today)"
            response = requests.get(link, allow_redirects=False, timeout=5)
            assert response.headers["Location"] == \
                "https://shop.test/orders?id=7&utm_source=herald&utm_medium=whatsapp&utm_campaign=order-updates"
            assert _channel(channel.id).clicked_count == 1
