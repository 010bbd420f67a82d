"""Webhook subscriptions of the Shopify emulator, as the GraphQL Admin API documents them, and the
deliveries Shopify makes to them.

- `webhookSubscriptions(first, after, uri | callbackUrl, topics)` lists the app's subscriptions;
- `webhookSubscriptionCreate(topic, webhookSubscription: {uri | callbackUrl, format})` answers
  `{webhookSubscription, userErrors}`: an address that is not HTTPS, or a second subscription to one
  topic at one address ("Address for this topic has already been taken"), is a userError;
- `webhookSubscriptionDelete(id)` answers `{deletedWebhookSubscriptionId, userErrors}` ("Webhook
  subscription does not exist" for an unknown id).

The address field is `uri` from API version 2025-10 (asking for it earlier is an error, as for any
field a version lacks) and `callbackUrl` (deprecated then) before. Mutations cost 10 points.

`deliver()` sends an event to every subscription of its topic the way Shopify does: a POST of the
JSON body signed with the app's client secret (`X-Shopify-Hmac-Sha256`, base64 HMAC-SHA256 of the
raw body) with `X-Shopify-Topic`, `-Shop-Domain`, `-API-Version`, `-Webhook-Id` (one per delivery,
kept by its retries), `-Event-Id` (one per event, the same for every subscription) and
`-Triggered-At`. `redeliver()` retries a delivery as Shopify does: the same body and headers.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from tests.emulators.shopify import Field

URI_SINCE = "2025-10"
MUTATION_COST = 10
# A part of WebhookSubscriptionTopic: every topic Herald uses and a few it does not.
TOPICS = frozenset({
    "APP_UNINSTALLED", "CHECKOUTS_CREATE", "CHECKOUTS_UPDATE", "CUSTOMERS_CREATE", "CUSTOMERS_DELETE",
    "CUSTOMERS_UPDATE", "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE", "CUSTOMERS_MARKETING_CONSENT_UPDATE",
    "ORDERS_CREATE", "ORDERS_UPDATED", "ORDERS_PAID", "PRODUCTS_CREATE", "PRODUCTS_UPDATE",
})


class WebhookGraphQLError(Exception):
    """A top-level GraphQL error (the whole operation is refused)."""


def header_topic(topic: str) -> str:
    """ORDERS_CREATE → orders/create; CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE →
    customers_email_marketing_consent/update."""
    resource, _, action = topic.lower().rpartition("_")
    return f"{resource}/{action}"


@dataclass(frozen=True)
class Delivery:
    """One POST Shopify made: what a retry sends again."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def webhook_id(self) -> str:
        return self.headers["X-Shopify-Webhook-Id"]

    @property
    def event_id(self) -> str:
        return self.headers["X-Shopify-Event-Id"]


@dataclass
class WebhookRegistry:
    shop_domain: str
    app_secret: str
    version_handle: str = "2025-10"
    _subscriptions: list[dict[str, Any]] = field(default_factory=list)
    history: list[tuple[str, str, str]] = field(default_factory=list)  # (created | deleted, topic, address)
    deliveries: list[Delivery] = field(default_factory=list)
    _next_id: int = 880_000_001

    # -- state for tests ------------------------------------------------------------------------
    def subscriptions(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._subscriptions)

    def add(self, topic: str, address: str) -> dict[str, Any]:
        """A subscription made by someone else (the merchant, by hand, or an earlier install)."""
        return copy.deepcopy(self._create(topic, address))

    # -- GraphQL --------------------------------------------------------------------------------
    def resolve_query(self, root: Field, version: str) -> tuple[Any, int]:
        from tests.emulators.shopify import paginate, project

        args = dict(root.args)
        address = self._address_argument(args, version, where="Field 'webhookSubscriptions'")
        records = [s for s in self._subscriptions
                   if (address is None or s["uri"] == address) and (not args.get("topics") or s["topic"] in args["topics"])]
        self._check_selection(root.selections or [], version)
        page = paginate(records, {"first": args.get("first"), "last": args.get("last"), "after": args.get("after"),
                                  "before": args.get("before"), "sortKey": "ID", "reverse": args.get("reverse")})
        return project(page.as_connection("WebhookSubscriptionConnection"), root.selections), 2 + len(page.records)

    def resolve_mutation(self, root: Field, version: str) -> Any:
        from tests.emulators.shopify import project

        if root.name == "webhookSubscriptionCreate":
            return project(self._create_from(root.args, version), root.selections)
        if root.name == "webhookSubscriptionDelete":
            return project(self._delete(str(root.args.get("id"))), root.selections)
        raise WebhookGraphQLError(f"Field '{root.name}' doesn't exist on type 'Mutation'")

    def _create_from(self, args: dict[str, Any], version: str) -> dict[str, Any]:
        topic, given = args.get("topic"), args.get("webhookSubscription")
        if topic not in TOPICS:
            raise WebhookGraphQLError(f"Variable $topic of type WebhookSubscriptionTopic! was provided invalid value "
                                      f"({topic!r} is not a valid WebhookSubscriptionTopic)")
        if not isinstance(given, dict):
            raise WebhookGraphQLError("Variable $webhookSubscription of type WebhookSubscriptionInput! was provided "
                                      "invalid value")
        address = self._address_argument(given, version, where="WebhookSubscriptionInput")
        field_name = "uri" if "uri" in given else "callbackUrl"
        error = self._address_problem(address, topic)
        if error is not None:
            return {"webhookSubscription": None,
                    "userErrors": [{"field": ["webhookSubscription", field_name], "message": error}]}
        return {"webhookSubscription": self._create(topic, str(address), given.get("format") or "JSON"),
                "userErrors": []}

    def _address_problem(self, address: str | None, topic: str) -> str | None:
        if not address:
            return "Address can't be blank"
        scheme = address.split("://", 1)[0] + "://" if "://" in address else address
        if scheme != "https://":
            return f"Address protocol {scheme} is not supported"
        if any(s["topic"] == topic and s["uri"] == address for s in self._subscriptions):
            return "Address for this topic has already been taken"
        return None

    def _create(self, topic: str, address: str, format_: str = "JSON") -> dict[str, Any]:
        number, self._next_id = self._next_id, self._next_id + 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {"__typename": "WebhookSubscription", "id": f"gid://shopify/WebhookSubscription/{number}",
                  "legacyResourceId": str(number), "topic": topic, "uri": address, "callbackUrl": address,
                  "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": address},
                  "format": format_, "filter": None, "includeFields": [], "metafieldNamespaces": [],
                  "apiVersion": {"__typename": "ApiVersion", "handle": self.version_handle},
                  "createdAt": now, "updatedAt": now}
        self._subscriptions.append(record)
        self.history.append(("created", topic, address))
        return record

    def _delete(self, subscription_id: str) -> dict[str, Any]:
        found = next((s for s in self._subscriptions if s["id"] == subscription_id), None)
        if found is None:
            return {"deletedWebhookSubscriptionId": None,
                    "userErrors": [{"field": ["id"], "message": "Webhook subscription does not exist"}]}
        self._subscriptions.remove(found)
        self.history.append(("deleted", found["topic"], found["uri"]))
        return {"deletedWebhookSubscriptionId": subscription_id, "userErrors": []}

    @staticmethod
    def _address_argument(args: dict[str, Any], version: str, *, where: str) -> str | None:
        if "uri" in args and version != "unstable" and version < URI_SINCE:
            raise WebhookGraphQLError(f"{where} doesn't accept argument 'uri' in API version {version}")
        value = args.get("uri", args.get("callbackUrl"))
        return None if value is None else str(value)

    @staticmethod
    def _check_selection(selections: list[Field], version: str) -> None:
        pending = list(selections)
        while pending:
            item = pending.pop()
            if item.name == "uri" and version != "unstable" and version < URI_SINCE:
                raise WebhookGraphQLError(f"Field 'uri' doesn't exist on type 'WebhookSubscription' in {version}")
            pending.extend(item.selections or [])

    # -- deliveries -------------------------------------------------------------------------------
    def deliver(self, topic: str, payload: dict[str, Any], *, event_id: str | None = None,
                rewrite: tuple[str, str] | None = None) -> list[Delivery]:
        """POST one event to every subscription of `topic` (e.g. "orders/create"). `rewrite` =
        (registered base, reachable base) points a public address at a local server."""
        event_id = event_id or str(uuid.uuid4())
        body = json.dumps(payload).encode()
        made = []
        for subscription in [s for s in self._subscriptions if header_topic(s["topic"]) == topic]:
            url = subscription["uri"]
            if rewrite is not None and url.startswith(rewrite[0]):
                url = rewrite[1] + url[len(rewrite[0]):]
            headers = {
                "Content-Type": "application/json",
                "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": self.sign(body),
                "X-Shopify-Shop-Domain": self.shop_domain,
                "X-Shopify-API-Version": self.version_handle,
                "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                "X-Shopify-Event-Id": event_id,
                "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
            }
            made.append(self._post(url, headers, body))
        return made

    def redeliver(self, delivery: Delivery) -> Delivery:
        """Shopify's retry: the original body and headers, to the same address."""
        return self._post(delivery.url, dict(delivery.headers), delivery.body)

    def sign(self, body: bytes) -> str:
        return base64.b64encode(hmac.new(self.app_secret.encode(), body, hashlib.sha256).digest()).decode()

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> Delivery:
        response = requests.post(url, data=body, headers=headers, timeout=10)
        delivery = Delivery(url, headers, body, response.status_code)
        self.deliveries.append(delivery)
        return delivery
