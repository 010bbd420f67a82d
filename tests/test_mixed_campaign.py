"""One campaign, all four channels, the same audience: email over SMTP, SMS through the Twilio
emulator, WhatsApp through the Cloud API emulator and web push through the push-service emulator —
each contact reached once per channel, every channel's counters equal to its ledger."""
from __future__ import annotations

import dataclasses
from collections import Counter

import sqlalchemy as sa

from app.extensions import db
from app.models import (
    Audience,
    Campaign,
    CampaignChannel,
    Contact,
    Delivery,
    PushSubscription,
)
from app.services import sending
from tests.emulators.push_service import PushServiceEmulator, vapid_keys
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.whatsapp import WhatsAppEmulator
from tests.support.campaigns import EMAIL_CONFIG, EVERYONE, launch, verified_merchant
from tests.support.providers import add_provider_account

TWILIO = {"accountSid": "AC" + "7a" * 16, "authToken": "mixed-twilio-token", "fromNumber": "+15005550006"}
WHATSAPP_NUMBER_ID = "106540352242922"
CHANNELS = {
    "email": EMAIL_CONFIG,
    "sms": {"body": "Hi {{ contact.firstName }}, the sale is on."},
    "whatsapp": {"templateName": "sale_notice", "language": "en_US", "parameters": ["{{ contact.firstName }}"]},
    "push": {"title": "Hi {{ contact.firstName }}", "body": "The sale is on.", "url": "https://shop.test/sale"},
}
PEOPLE = 6


def _merchant_with_accounts(push: PushServiceEmulator, public_key: str, private_key: str):
    user = verified_merchant()
    add_provider_account(user, "sms", TWILIO)
    add_provider_account(user, "whatsapp", {"phoneNumberId": WHATSAPP_NUMBER_ID, "accessToken": "mixed-wa-token"})
    add_provider_account(user, "push", {"vapidPublicKey": public_key, "vapidPrivateKey": private_key,
                                        "subject": "mailto:ops@shop.test"})
    for i in range(PEOPLE):
        contact = Contact(user_id=user.id, email=f"p{i}@example.com", phone=f"+1415555{i:04d}", first_name=f"N{i}",
                          attributes={}, external_ids={}, consent={c: "subscribed" for c in CHANNELS},
                          consent_sources={})
        db.session.add(contact)
        db.session.flush()
        keys = push.new_subscription(application_server_key=public_key)
        db.session.add(PushSubscription(contact_id=contact.id, endpoint=keys["endpoint"],
                                        p256dh=keys["keys"]["p256dh"], auth=keys["keys"]["auth"]))
    campaign = Campaign(user_id=user.id, name="Everywhere", config={})
    db.session.add(campaign)
    db.session.flush()
    db.session.add_all([CampaignChannel(campaign_id=campaign.id, channel_type=t, config=c) for t, c in CHANNELS.items()])
    db.session.add(Audience(campaign_id=campaign.id, name="everyone", definition=EVERYONE))
    db.session.commit()
    return user, campaign


def test_a_campaign_on_all_four_channels(app, committed_db, smtp_sink):
    private_key, public_key = vapid_keys()
    with (TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}) as twilio,
          WhatsAppEmulator(tokens={"mixed-wa-token"}) as whatsapp, PushServiceEmulator() as push,
          app.app_context()):
        settings = app.config["HERALD_SETTINGS"]
        app.config["HERALD_SETTINGS"] = dataclasses.replace(settings, api_base_urls={
            **settings.api_base_urls, "TWILIO_API_BASE_URL": twilio.base_url,
            "WHATSAPP_API_BASE_URL": whatsapp.base_url})
        try:
            user, campaign = _merchant_with_accounts(push, public_key, private_key)
            launch(user.id, campaign.id)
            channels = db.session.scalars(sa.select(CampaignChannel).where(CampaignChannel.campaign_id == campaign.id))
            for channel_id in [c.id for c in channels]:
                sending.send_channel(channel_id)
            db.session.expire_all()
            ledger = Counter(db.session.execute(
                sa.select(Delivery.channel_type, Delivery.status).where(Delivery.campaign_id == campaign.id)).all())
            counters = {c.channel_type: (c.sent_count, c.delivered_count, c.status) for c in db.session.scalars(
                sa.select(CampaignChannel).where(CampaignChannel.campaign_id == campaign.id))}
            status = db.session.get(Campaign, campaign.id).status
        finally:
            app.config["HERALD_SETTINGS"] = settings
            db.session.remove()

        assert ledger == {("email", "delivered"): PEOPLE, ("sms", "sent"): PEOPLE, ("whatsapp", "sent"): PEOPLE,
                          ("push", "delivered"): PEOPLE}
        assert counters == {"email": (PEOPLE, PEOPLE, "sent"), "sms": (PEOPLE, 0, "sent"),
                            "whatsapp": (PEOPLE, 0, "sent"), "push": (PEOPLE, PEOPLE, "sent")}
        assert status == "completed"
        # Each contact once per channel, at each provider.
        assert sorted(r for m in smtp_sink.wait_for(PEOPLE) for r in m.recipients) == \
            sorted(f"p{i}@example.com" for i in range(PEOPLE))
        assert sorted(m["to"] for m in twilio.messages) == sorted(f"+1415555{i:04d}" for i in range(PEOPLE))
        assert len(whatsapp.messages) == PEOPLE and len({m["to"] for m in whatsapp.messages}) == PEOPLE
        assert len(push.received) == PEOPLE
        assert {b"The sale is on." in item["plaintext"] for item in push.received} == {True}
