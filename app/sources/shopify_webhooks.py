"""The webhook subscriptions Herald keeps in a Shopify shop, through the GraphQL Admin API.

`webhookSubscriptions` lists what is already registered at Herald's address for the source,
`webhookSubscriptionCreate` adds each missing topic (JSON format) and `webhookSubscriptionDelete`
removes subscriptions. From API version 2025-10 the address is the subscription's `uri`; earlier
versions call it `callbackUrl` (deprecated since). Shopify signs every delivery with the app's
client secret: the source's `webhookSecret`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.sources.http import ProviderError, SourceRejected
from app.sources.shopify import ShopifyClient

# The X-Shopify-Topic each subscription delivers → its WebhookSubscriptionTopic. Since 2025-01
# customer payloads no longer carry marketing consent: its own two topics do.
TOPICS: dict[str, str] = {
    "orders/create": "ORDERS_CREATE",
    "checkouts/create": "CHECKOUTS_CREATE",
    "customers/create": "CUSTOMERS_CREATE",
    "customers/update": "CUSTOMERS_UPDATE",
    "customers_email_marketing_consent/update": "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE",
    "customers_marketing_consent/update": "CUSTOMERS_MARKETING_CONSENT_UPDATE",
}
URI_SINCE = "2025-10"
PAGE_SIZE = 100
_TAKEN = "has already been taken"  # the userError of a second subscription to one topic at one address
_GONE = "does not exist"  # the userError of deleting a subscription already deleted


@dataclass(frozen=True)
class Subscription:
    id: str
    topic: str  # the WebhookSubscriptionTopic enum value
    address: str


def _address_field(version: str) -> str:
    return "uri" if version == "unstable" or version >= URI_SINCE else "callbackUrl"


def list_subscriptions(client: ShopifyClient, address: str) -> list[Subscription]:
    """Every subscription of this app in the shop that delivers to `address`."""
    field = _address_field(client.version)
    query = (f"query Webhooks($first: Int!, $after: String, $address: {'String' if field == 'uri' else 'URL'}) {{\n"
             f"  webhookSubscriptions(first: $first, after: $after, {field}: $address) {{\n"
             f"    nodes {{ id topic {field} }}\n    pageInfo {{ hasNextPage endCursor }}\n  }}\n}}")
    found: list[Subscription] = []
    after = None
    while True:
        data = client.execute("webhookSubscriptions", query, {"first": PAGE_SIZE, "after": after, "address": address})
        connection = data.get("webhookSubscriptions")
        if not isinstance(connection, dict):
            raise ProviderError("Shopify answered the webhookSubscriptions query without subscriptions.")
        found += [Subscription(str(n["id"]), str(n.get("topic")), str(n.get(field)))
                  for n in connection.get("nodes") or [] if isinstance(n, dict) and n.get("id")]
        info = connection.get("pageInfo") or {}
        if not info.get("hasNextPage") or not info.get("endCursor"):
            # Shopify filters by address already; the check keeps a loose filter from adopting others'.
            return [s for s in found if s.address == address]
        after = info["endCursor"]


def create_subscription(client: ShopifyClient, topic: str, address: str) -> str | None:
    """The new subscription's id; None when one to this topic at this address exists already."""
    field = _address_field(client.version)
    query = ("mutation Subscribe($topic: WebhookSubscriptionTopic!, $subscription: WebhookSubscriptionInput!) {\n"
             "  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $subscription) {\n"
             "    webhookSubscription { id topic }\n    userErrors { field message }\n  }\n}")
    data = client.execute("webhookSubscriptionCreate", query,
                          {"topic": topic, "subscription": {field: address, "format": "JSON"}})
    payload = data.get("webhookSubscriptionCreate") or {}
    errors = _user_errors(payload)
    if any(_TAKEN in message for message in errors):
        return None
    if errors:
        raise SourceRejected(f"Shopify refused the {topic} webhook subscription: {'; '.join(errors)}")
    subscription = payload.get("webhookSubscription") or {}
    if not subscription.get("id"):
        raise ProviderError(f"Shopify created no {topic} webhook subscription and said nothing why.")
    return str(subscription["id"])


def delete_subscription(client: ShopifyClient, subscription_id: str) -> None:
    """Delete one subscription; one already gone counts as deleted."""
    query = ("mutation Unsubscribe($id: ID!) {\n"
             "  webhookSubscriptionDelete(id: $id) { deletedWebhookSubscriptionId userErrors { field message } }\n}")
    data = client.execute("webhookSubscriptionDelete", query, {"id": subscription_id})
    errors = [m for m in _user_errors(data.get("webhookSubscriptionDelete") or {}) if _GONE not in m]
    if errors:
        raise SourceRejected(f"Shopify refused to delete webhook subscription {subscription_id}: {'; '.join(errors)}")


def reconcile(client: ShopifyClient, address: str) -> dict[str, str]:
    """Make the shop deliver exactly TOPICS to `address`, once each; topic → subscription id."""
    wanted = set(TOPICS.values())
    kept: dict[str, str] = {}
    for subscription in list_subscriptions(client, address):
        if subscription.topic in wanted and subscription.topic not in kept:
            kept[subscription.topic] = subscription.id
        else:  # a topic Herald no longer needs, or a second subscription that would deliver twice
            delete_subscription(client, subscription.id)
    for topic in sorted(wanted - kept.keys()):
        created = create_subscription(client, topic, address)
        if created is None:  # made meanwhile (another worker, or the merchant): adopt it
            created = next((s.id for s in list_subscriptions(client, address) if s.topic == topic), None)
            if created is None:
                raise ProviderError(f"Shopify reported a {topic} subscription at {address} but does not list it.")
        kept[topic] = created
    return kept


def _user_errors(payload: dict[str, Any]) -> list[str]:
    errors = payload.get("userErrors")
    if not isinstance(errors, list):
        return []
    return [str(e.get("message")) for e in errors if isinstance(e, dict)]
