"""Campaigns built directly in the database for the send-engine tests."""
from __future__ import annotations

import uuid
from typing import Any

from app.extensions import db
from app.models import Audience, Campaign, CampaignChannel, Contact, Sender, User, utcnow

EVERYONE: dict[str, Any] = {"match": "all", "conditions": []}
# Email goes out only from a verified sender: the merchants here have this one.
SENDER = "news@shop.com"
EMAIL_CONFIG: dict[str, Any] = {
    "fromEmail": SENDER, "fromName": "Shop", "subject": "Hello {{ contact.firstName }}",
    "html": '<html><body><p>Hi {{ contact.firstName }}</p><a href="https://shop.test/sale">Sale</a></body></html>',
    "text": "Hi {{ contact.firstName }} https://shop.test/sale",
}


def verified_merchant() -> User:
    user = User(email=f"m-{uuid.uuid4().hex[:10]}@example.com", password_hash="x", is_verified=True)
    db.session.add(user)
    db.session.flush()
    verified_sender(user.id)
    return user


def verified_sender(user_id: uuid.UUID, address: str = SENDER) -> Sender:
    """The address, verified for the merchant as if its confirmation link had been followed."""
    sender = Sender(user_id=user_id, kind="address", email=address.lower(), status="verified", verified_at=utcnow())
    db.session.add(sender)
    db.session.flush()
    return sender


def add_contacts(user: User, count: int, prefix: str = "c", **consent: str) -> list[Contact]:
    contacts = [
        Contact(user_id=user.id, email=f"{prefix}{i}@example.com", first_name=f"N{i}", attributes={},
                external_ids={}, consent={"email": "subscribed", **consent}, consent_sources={})
        for i in range(count)
    ]
    db.session.add_all(contacts)
    db.session.flush()
    return contacts


def campaign_on(user: User, channel_type: str, config: dict[str, Any], name: str = "Flash sale",
                audience: dict[str, Any] | None = None) -> tuple[Campaign, CampaignChannel]:
    """A draft campaign with one channel of `channel_type` and one audience (everyone by default)."""
    campaign = Campaign(user_id=user.id, name=name, config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type=channel_type, config=config)
    db.session.add_all([channel, Audience(campaign_id=campaign.id, name="everyone", definition=audience or EVERYONE)])
    db.session.commit()
    return campaign, channel


def email_campaign(user: User, config: dict[str, Any] | None = None,
                   definitions: list[dict[str, Any]] | None = None) -> tuple[Campaign, CampaignChannel]:
    campaign = Campaign(user_id=user.id, name="Winter sale", config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type="email", config={**EMAIL_CONFIG, **(config or {})})
    db.session.add(channel)
    for index, definition in enumerate(definitions or [EVERYONE]):
        db.session.add(Audience(campaign_id=campaign.id, name=f"audience {index}", definition=definition))
    db.session.commit()
    return campaign, channel


def launch(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """Launch now and write the ledger here, as the worker's prepare task would (for tests that send
    in this process rather than through a worker)."""
    from app.services import campaign_lifecycle

    campaign = campaign_lifecycle.launch_now(user_id, campaign_id)
    campaign_lifecycle.prepare_ledger(campaign_id)
    return campaign
