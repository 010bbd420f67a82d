"""A demo merchant for a newcomer's first hour (`flask demo`): a verified account, a Meta Pixel source
with a week of shopper events, the contacts those shoppers are, a verified sender address and a draft
email campaign from it that is ready to launch. Built with the same service calls the API makes, each its own transaction.
"""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from app.services import accounts, audiences, campaigns, contacts, data_sources, event_processing, ingestion, senders
from app.sources.normalize import sha256_email

DEMO_EMAIL = "demo@example.com"
SHOPPERS = (
    ("ada@example.com", "Ada", "Lovelace", "GB"),
    ("grace@example.com", "Grace", "Hopper", "US"),
    ("alan@example.com", "Alan", "Turing", "GB"),
    ("katherine@example.com", "Katherine", "Johnson", "US"),
    ("edsger@example.com", "Edsger", "Dijkstra", "NL"),
)
# What each shopper did on the store, in order (Meta Pixel / Conversions API event names).
JOURNEYS = (
    ("PageView", "ViewContent", "AddToCart", "InitiateCheckout", "Purchase"),
    ("PageView", "ViewContent", "AddToCart", "InitiateCheckout"),
    ("PageView", "ViewContent", "ViewContent"),
    ("PageView", "ViewContent", "AddToCart", "InitiateCheckout", "Purchase", "Purchase"),
    ("PageView", "Lead"),
)
# Ingest-only: the demo has no Meta credentials to check, only events to receive.
PIXEL_CONFIG = {"pixelId": "1234567890", "apiVersion": "v21.0"}
# A name under .localhost, reserved (RFC 6761) so no one's real domain; taken as verified for the demo.
DEMO_SENDER = "news@demo-store.localhost"
EMAIL_CHANNEL = {
    "fromEmail": DEMO_SENDER, "fromName": "Demo Store",
    "subject": "{{ contact.firstName }}, something new is in store",
    "html": "<p>Hello {{ contact.firstName }},</p><p>Our new collection is out: "
            '<a href="https://example.com/new">have a look</a>.</p>',
    "text": "Hello {{ contact.firstName }},\n\nOur new collection is out: https://example.com/new\n",
}
EVERYONE_SUBSCRIBED = {"match": "all", "conditions": [{"type": "consent", "channel": "email"}]}


@dataclass(frozen=True)
class DemoMerchant:
    email: str
    password: str
    user_id: uuid.UUID
    source_id: uuid.UUID
    ingest_key: str
    contacts: int
    events: int
    campaign_id: uuid.UUID


def load_demo_merchant(email: str = DEMO_EMAIL, password: str | None = None) -> DemoMerchant:
    """Create the demo merchant (409 Conflict if the address has an account already)."""
    password = password or secrets.token_urlsafe(12)
    user = accounts.create_user(email, password, verified=True, first_name="Demo", last_name="Merchant",
                                company_name="Demo Store")
    for address, first_name, last_name, country in SHOPPERS:
        contacts.create_contact(user.id, {"email": address, "first_name": first_name, "last_name": last_name,
                                          "attributes": {"country": country}})
    source = data_sources.create_source(user.id, "facebook_pixel", "Demo store pixel", PIXEL_CONFIG)
    assert source.ingest_key is not None  # a pixel source is created with its key
    events = _pixel_events()
    ingestion.store_events(source.id, ingestion.capi_events({"data": events}))
    # Processed here rather than left to a worker, so the audiences below already see the activity.
    event_processing.process_pending()
    senders.add_verified_address(user.id, DEMO_SENDER)
    campaign = campaigns.create_campaign(user.id, {"name": "New collection",
                                                   "description": "A demo campaign: launch it to send it."})
    campaigns.create_channel(user.id, campaign.id, "email", EMAIL_CHANNEL)
    audiences.create_audience(user.id, campaign.id, "Everyone subscribed to email", EVERYONE_SUBSCRIBED)
    return DemoMerchant(email=user.email, password=password, user_id=user.id, source_id=source.id,
                        ingest_key=source.ingest_key, contacts=len(SHOPPERS), events=len(events),
                        campaign_id=campaign.id)


def _pixel_events() -> list[dict[str, Any]]:
    """Each shopper's journey, spread over the past six days (a step every four hours), oldest first."""
    now = int(time.time())
    events: list[dict[str, Any]] = []
    for (address, *_), journey in zip(SHOPPERS, JOURNEYS, strict=True):
        start = now - 6 * 86400 + len(events) * 3600
        for step, name in enumerate(journey):
            events.append({
                "event_name": name, "event_time": start + step * 4 * 3600, "event_id": f"demo-{uuid.uuid4()}",
                "action_source": "website", "event_source_url": "https://example.com/new",
                "user_data": {"em": [sha256_email(address)]},
                "custom_data": {"value": 49.0, "currency": "USD"} if name == "Purchase" else {},
            })
    return events
