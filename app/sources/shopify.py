"""Shopify connector: pages of customers, orders and abandoned checkouts from the GraphQL Admin API
(the webhook subscriptions Herald keeps are in app.sources.shopify_webhooks).

`POST {base}/admin/api/{apiVersion}/graphql.json` with `X-Shopify-Access-Token`. Each resource is
read by `updated_at:>'…'` search filter with cursor pagination. Shopify meters GraphQL by query cost
from a leaky bucket reported on every answer (`extensions.cost.throttleStatus`): the client waits
before a query the bucket cannot pay for, and a THROTTLED answer is waited out and asked again.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from app.sources.http import (
    CredentialsRejected,
    ProviderError,
    RetryPolicy,
    SourceRejected,
    TransientProviderError,
    json_body,
    send,
)

PROVIDER = "Shopify"
DEFAULT_API_VERSION = "2025-10"
DEFAULT_BACKFILL_DAYS = 90
# Records updated in the same second as the last high-water mark, or made visible to search a little
# late, would otherwise fall between two syncs; what the overlap fetches twice is de-duplicated.
SYNC_OVERLAP = timedelta(minutes=5)
MAX_THROTTLE_RETRIES = 3

_SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_API_VERSION = re.compile(r"\d{4}-\d{2}|unstable")

# From 2025-04 a customer's email and phone come with their marketing state in defaultEmailAddress /
# defaultPhoneNumber; the customer-level emailMarketingConsent / smsMarketingConsent (and email,
# phone) they replace are deprecated. Older API versions have only the latter.
CONTACT_POINTS_SINCE = "2025-04"
_CONTACT_POINTS = "defaultEmailAddress { emailAddress marketingState } defaultPhoneNumber { phoneNumber marketingState }"
_LEGACY_CONTACT_POINTS = "email phone emailMarketingConsent { marketingState } smsMarketingConsent { marketingState }"


def contact_points(version: str) -> str:
    return _CONTACT_POINTS if version == "unstable" or version >= CONTACT_POINTS_SINCE else _LEGACY_CONTACT_POINTS


def _customer_brief(version: str) -> str:
    return f"id firstName lastName {contact_points(version)}"


def _customer(version: str) -> str:
    return f"""id legacyResourceId firstName lastName displayName state locale tags note verifiedEmail
  createdAt updatedAt {contact_points(version)}
  defaultAddress {{ firstName lastName phone city provinceCode countryCodeV2 zip }}"""


def _money_and_addresses(version: str) -> str:
    return f"""totalPriceSet {{ shopMoney {{ amount currencyCode }} }}
  customer {{ {_customer_brief(version)} }}
  billingAddress {{ firstName lastName phone countryCodeV2 provinceCode }} shippingAddress {{ countryCodeV2 }}
  lineItems(first: 10) {{ nodes {{ title quantity product {{ id }} }} }}"""


def _order(version: str) -> str:
    return f"""id legacyResourceId name email phone createdAt processedAt updatedAt cancelledAt test
  sourceName tags displayFinancialStatus displayFulfillmentStatus currencyCode
  {_money_and_addresses(version)}"""


def _checkout(version: str) -> str:
    return f"id name abandonedCheckoutUrl createdAt updatedAt completedAt {_money_and_addresses(version)}"


@dataclass(frozen=True)
class Resource:
    """One synced connection and how its nodes are stored."""

    name: str  # the GraphQL connection, and the key of the run's per-resource details
    event_type: str  # the topic stored on data_events, as a webhook would
    sort_key: str
    page_size: int  # sized so one page costs well under Shopify's 1000-point single-query maximum
    fields: Callable[[str], str]  # per API version
    # A customer change is news (customers/update); an order or checkout is created once, so later
    # edits of the same record must not count as a second order placed or checkout started.
    per_version: bool
    # Orders keep changing for weeks (fulfilment, refunds, tags) while their de-duplication keys are
    # purged after days, so only orders created inside the window are stored: an edit of an older
    # order is never mistaken for a new one. (A checkout may be listed as abandoned only after the
    # previous sync, so checkouts rely on their keys alone.)
    created_in_window_only: bool = False

    def query(self, version: str) -> str:
        return (f"query Sync($first: Int!, $after: String, $query: String) {{\n"
                f"  {self.name}(first: $first, after: $after, query: $query, sortKey: {self.sort_key}) {{\n"
                f"    nodes {{ {self.fields(version)} }}\n    pageInfo {{ hasNextPage endCursor }}\n  }}\n}}")

    def keeps(self, node: dict[str, Any], since: datetime) -> bool:
        if not self.created_in_window_only:
            return True
        try:
            created = datetime.fromisoformat(str(node.get("createdAt")))
        except ValueError:
            return True  # unreadable: store it and let processing judge, rather than lose it
        if created.tzinfo is not None:
            created = created.astimezone(UTC).replace(tzinfo=None)
        return created > since

    def dedupe_key(self, node: dict[str, Any]) -> str:
        if self.per_version:
            return f"shopify:sync:{node['id']}:{node.get('updatedAt')}"
        return f"shopify:sync:{node['id']}"


RESOURCES: tuple[Resource, ...] = (
    Resource("customers", "customers/update", "UPDATED_AT", 100, _customer, per_version=True),
    Resource("orders", "orders/create", "UPDATED_AT", 25, _order, per_version=False, created_in_window_only=True),
    # abandonedCheckouts has no UPDATED_AT sort key: the updated_at filter still bounds it.
    Resource("abandonedCheckouts", "checkouts/create", "ID", 25, _checkout, per_version=False),
)


@dataclass(frozen=True)
class Page:
    nodes: list[dict[str, Any]]
    end_cursor: str | None
    has_next: bool


def window_start(config: dict[str, Any], last_sync_at: datetime | None, started_at: datetime) -> datetime:
    """Where a sync starts reading: the last high-water mark (minus the overlap), else the backfill."""
    if last_sync_at is not None:
        return last_sync_at - SYNC_OVERLAP
    try:
        days = int(config.get("backfillDays") or DEFAULT_BACKFILL_DAYS)
    except (TypeError, ValueError):
        days = DEFAULT_BACKFILL_DAYS
    return started_at - timedelta(days=max(days, 1))


def search_since(moment: datetime) -> str:
    return f"updated_at:>'{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}'"


class ShopifyClient:
    """One conversation with one shop (one `requests.Session`, closed by `close()`)."""

    def __init__(self, config: dict[str, Any], *, base_url: str, policy: RetryPolicy) -> None:
        version = str(config.get("apiVersion") or DEFAULT_API_VERSION)
        if not _API_VERSION.fullmatch(version):
            raise SourceRejected(f"apiVersion {version!r} is not a Shopify API version (e.g. 2025-10).")
        self.version = version
        self.url = f"{_shop_base(config, base_url)}/admin/api/{version}/graphql.json"
        token = config.get("accessToken")
        if not token:
            raise CredentialsRejected("No Shopify access token is configured.")
        self.policy = policy
        self.session = requests.Session()
        self.session.headers.update({"X-Shopify-Access-Token": token, "Accept": "application/json"})
        self._bucket: dict[str, float] | None = None
        self._bucket_seen_at = 0.0
        self._costs: dict[str, float] = {}

    def close(self) -> None:
        self.session.close()

    def fetch_page(self, resource: Resource, since: datetime, after: str | None) -> Page:
        variables = {"first": resource.page_size, "after": after, "query": search_since(since)}
        return _page(resource.name, self.execute(resource.name, resource.query(self.version), variables))

    def execute(self, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The answer's `data` (`name` keys the cost remembered for the next call of the same
        operation); a THROTTLED answer is waited out and asked again."""
        for _ in range(MAX_THROTTLE_RETRIES):
            self._wait_for_budget(name)
            body = self._post(query, variables)
            self._note_cost(name, body)
            if not _is_throttled(body):
                return _data(name, body)
        raise TransientProviderError(f"Shopify kept throttling the {name} query.")

    def _post(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = send(self.session, "POST", self.url, provider=PROVIDER, policy=self.policy,
                        json={"query": query, "variables": variables})
        body = json_body(response)
        if response.status_code in (402, 404, 423):
            raise SourceRejected(f"Shopify answered HTTP {response.status_code}: check the shop domain and "
                                 "API version, and that the store is open.")
        if response.status_code != 200 or not isinstance(body, dict):
            raise ProviderError(f"Shopify answered HTTP {response.status_code} with an unexpected body.")
        return body

    def _wait_for_budget(self, name: str) -> None:
        """Wait until the bucket, refilling since the last answer, can pay for this query again."""
        cost, bucket = self._costs.get(name), self._bucket
        if cost is None or bucket is None or bucket.get("restoreRate", 0) <= 0:
            return
        restored = (time.monotonic() - self._bucket_seen_at) * bucket["restoreRate"]
        deficit = cost - bucket.get("currentlyAvailable", 0) - restored
        if deficit > 0:
            self.policy.wait(deficit / bucket["restoreRate"])

    def _note_cost(self, name: str, body: dict[str, Any]) -> None:
        cost = (body.get("extensions") or {}).get("cost") or {}
        if isinstance(cost.get("throttleStatus"), dict):
            self._bucket, self._bucket_seen_at = cost["throttleStatus"], time.monotonic()
        if isinstance(cost.get("requestedQueryCost"), (int, float)):
            self._costs[name] = float(cost["requestedQueryCost"])


def _shop_base(config: dict[str, Any], base_url: str) -> str:
    if base_url:
        return base_url.rstrip("/")
    domain = str(config.get("shopDomain") or "").strip().lower()
    # The merchant chooses this host: only a Shopify shop domain may become a request target.
    if not _SHOP_DOMAIN.fullmatch(domain):
        raise SourceRejected(f"shopDomain {domain!r} is not a *.myshopify.com domain.")
    return f"https://{domain}"


def _error_codes(body: dict[str, Any]) -> list[str]:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return [str((e.get("extensions") or {}).get("code")) for e in errors if isinstance(e, dict)]


def _is_throttled(body: dict[str, Any]) -> bool:
    return "THROTTLED" in _error_codes(body)


def _data(name: str, body: dict[str, Any]) -> dict[str, Any]:
    if "ACCESS_DENIED" in _error_codes(body):
        raise CredentialsRejected(f"Shopify denied access to {name}: the app lacks the access scope for it.")
    data = body.get("data")
    if body.get("errors") or not isinstance(data, dict):
        raise ProviderError(f"Shopify refused the {name} query: {_first_message(body)}")
    return data


def _page(name: str, data: dict[str, Any]) -> Page:
    connection = data.get(name)
    if not isinstance(connection, dict):
        raise ProviderError(f"Shopify answered the {name} query without {name}.")
    info = connection.get("pageInfo") or {}
    nodes = [n for n in connection.get("nodes") or [] if isinstance(n, dict) and n.get("id")]
    return Page(nodes=nodes, end_cursor=info.get("endCursor"), has_next=bool(info.get("hasNextPage")))


def _first_message(body: dict[str, Any]) -> str:
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("message"))
    return str(errors or "no data in the answer")
