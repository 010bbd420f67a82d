"""The provider emulators answer over real HTTP in the providers' documented formats.

No database is involved: these tests use only the emulators and `requests`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.emulators import GtmEmulator, MetaGraphEmulator, ShopifyEmulator

TOKEN = "shpat_test_token"
CUSTOMERS_QUERY = """
query Customers($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    edges { cursor node { id email firstName updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture()
def shopify() -> Iterator[ShopifyEmulator]:
    with ShopifyEmulator(valid_tokens={TOKEN}) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture()
def meta() -> Iterator[MetaGraphEmulator]:
    with MetaGraphEmulator(valid_tokens={"good"}, expired_tokens={"old"}) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture()
def gtm() -> Iterator[GtmEmulator]:
    with GtmEmulator(valid_tokens={"good"}, forbidden_tokens={"no-scope"}) as emulator:
        yield emulator
        assert emulator.server_errors == []


def graphql(emulator: ShopifyEmulator, query: str, variables: dict[str, Any] | None = None,
            token: str = TOKEN) -> requests.Response:
    return requests.post(f"{emulator.base_url}/admin/api/2025-01/graphql.json",
                         json={"query": query, "variables": variables or {}},
                         headers={"X-Shopify-Access-Token": token}, timeout=5)


# -- Shopify ------------------------------------------------------------------------------------
def test_shopify_paginates_three_pages_with_end_cursor(shopify: ShopifyEmulator) -> None:
    for i in range(7):
        shopify.add_customer(email=f"c{i}@example.com", updated_at=f"2024-01-0{i + 1}T00:00:00Z")
    seen, after, pages = [], None, 0
    while True:
        body = graphql(shopify, CUSTOMERS_QUERY, {"first": 3, "after": after}).json()
        connection = body["data"]["customers"]
        seen += [edge["node"]["email"] for edge in connection["edges"]]
        pages += 1
        assert body["extensions"]["cost"]["requestedQueryCost"] == 2 + 3 * 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert pages == 3
    assert seen == [f"c{i}@example.com" for i in range(7)]  # UPDATED_AT order, no gaps or repeats
    assert shopify.call_count("customers") == 3
    assert shopify.arguments_seen("customers")[1]["after"] is not None


def test_shopify_updated_at_filter_inline_arguments(shopify: ShopifyEmulator) -> None:
    old = shopify.add_customer(email="old@example.com", updated_at="2024-01-01T00:00:00Z")
    shopify.add_customer(email="new@example.com", updated_at="2024-03-01T00:00:00Z")
    shopify.update_record(old["id"], updated_at="2024-04-01T00:00:00Z", firstName="Renamed")
    query = """{ customers(first: 10, sortKey: UPDATED_AT, query: "updated_at:>'2024-02-01T00:00:00Z'") {
                   nodes { email firstName } pageInfo { hasNextPage endCursor } } }"""
    nodes = graphql(shopify, query).json()["data"]["customers"]["nodes"]
    assert nodes == [{"email": "new@example.com", "firstName": None},
                     {"email": "old@example.com", "firstName": "Renamed"}]


def test_shopify_orders_and_abandoned_checkouts(shopify: ShopifyEmulator) -> None:
    customer = shopify.add_customer(email="buyer@example.com", first_name="Bea")
    shopify.add_order(customer=customer, total="42.50", currency="EUR")
    shopify.add_abandoned_checkout(customer=customer, total="9.99")
    query = """{
      orders(first: 5, sortKey: UPDATED_AT) { edges { node { id name totalPriceSet { shopMoney { amount currencyCode } }
                                                    customer { id email } } } }
      checkouts: abandonedCheckouts(first: 5) { nodes { id abandonedCheckoutUrl customer { email } } }
    }"""
    data = graphql(shopify, query).json()["data"]
    order = data["orders"]["edges"][0]["node"]
    assert order["id"].startswith("gid://shopify/Order/") and order["name"] == "#1001"
    assert order["totalPriceSet"] == {"shopMoney": {"amount": "42.50", "currencyCode": "EUR"}}
    assert order["customer"] == {"id": customer["id"], "email": "buyer@example.com"}
    checkout = data["checkouts"]["nodes"][0]
    assert checkout["id"].startswith("gid://shopify/AbandonedCheckout/")
    assert checkout["customer"] == {"email": "buyer@example.com"}


def test_shopify_rejects_what_the_real_api_rejects(shopify: ShopifyEmulator) -> None:
    # AbandonedCheckoutSortKeys has no UPDATED_AT; page size is capped at 250; first/last is required.
    bad_sort = graphql(shopify, "{ abandonedCheckouts(first: 5, sortKey: UPDATED_AT) { nodes { id } } }").json()
    assert "invalid value (UPDATED_AT)" in bad_sort["errors"][0]["message"]
    assert "data" not in bad_sort
    too_big = graphql(shopify, "{ customers(first: 251) { nodes { id } } }").json()
    assert "cannot exceed 250" in too_big["errors"][0]["message"]
    no_size = graphql(shopify, "{ orders { nodes { id } } }").json()
    assert no_size["errors"][0]["message"] == "you must provide one of first or last"


def test_shopify_invalid_token_is_401(shopify: ShopifyEmulator) -> None:
    response = graphql(shopify, CUSTOMERS_QUERY, {"first": 1}, token="wrong")
    assert response.status_code == 401
    assert response.json() == {"errors": "[API] Invalid API key or access token "
                                         "(unrecognized login or wrong password)"}


def test_shopify_throttled_then_recovers(shopify: ShopifyEmulator) -> None:
    shopify.add_customer(email="a@example.com")
    shopify.throttle_next(2)
    for _ in range(2):
        response = graphql(shopify, CUSTOMERS_QUERY, {"first": 50})
        assert response.status_code == 200
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] == "THROTTLED" and "data" not in body
        cost = body["extensions"]["cost"]
        assert cost["requestedQueryCost"] == 52 and cost["actualQueryCost"] is None
        assert cost["throttleStatus"]["currentlyAvailable"] < cost["requestedQueryCost"]
        assert cost["throttleStatus"]["maximumAvailable"] == 2000.0
        assert cost["throttleStatus"]["restoreRate"] == 100.0
    body = graphql(shopify, CUSTOMERS_QUERY, {"first": 50}).json()
    assert len(body["data"]["customers"]["edges"]) == 1
    assert body["extensions"]["cost"]["actualQueryCost"] == 3


def test_shopify_bucket_throttles_naturally_and_refills() -> None:
    with ShopifyEmulator(valid_tokens={TOKEN}, restore_rate=1000.0) as shopify:
        shopify.drain_bucket(to=0)
        first = graphql(shopify, CUSTOMERS_QUERY, {"first": 50}).json()
        assert first["errors"][0]["extensions"]["code"] == "THROTTLED"
        status = first["extensions"]["cost"]["throttleStatus"]
        time.sleep((52 - status["currentlyAvailable"]) / status["restoreRate"] + 0.02)
        assert "errors" not in graphql(shopify, CUSTOMERS_QUERY, {"first": 50}).json()


def test_shopify_429_with_retry_after(shopify: ShopifyEmulator) -> None:
    shopify.rate_limit_next(1, retry_after=2)
    limited = graphql(shopify, CUSTOMERS_QUERY, {"first": 1})
    assert limited.status_code == 429
    assert float(limited.headers["Retry-After"]) == 2.0
    assert graphql(shopify, CUSTOMERS_QUERY, {"first": 1}).status_code == 200
    assert shopify.call_count() == 2


def test_shopify_5xx_then_success(shopify: ShopifyEmulator) -> None:
    shopify.fail_next(2, status=503)
    assert [graphql(shopify, CUSTOMERS_QUERY, {"first": 1}).status_code for _ in range(3)] == [503, 503, 200]


def test_requests_are_recorded(shopify: ShopifyEmulator) -> None:
    graphql(shopify, CUSTOMERS_QUERY, {"first": 1})
    (recorded,) = shopify.requests
    assert recorded.method == "POST" and recorded.path == "/admin/api/2025-01/graphql.json"
    assert recorded.header("x-shopify-access-token") == TOKEN
    assert recorded.json["variables"] == {"first": 1}


# -- Meta Graph API ---------------------------------------------------------------------------
def test_meta_reads_pixel(meta: MetaGraphEmulator) -> None:
    meta.add_pixel("123456789012345", name="Shop pixel")
    url = f"{meta.base_url}/v21.0/123456789012345"
    assert requests.get(url, params={"access_token": "good"}, timeout=5).json() == {
        "id": "123456789012345", "name": "Shop pixel"}
    with_fields = requests.get(url, params={"fields": "name,is_unavailable"},
                               headers={"Authorization": "Bearer good"}, timeout=5).json()
    assert with_fields == {"id": "123456789012345", "name": "Shop pixel", "is_unavailable": False}


def test_meta_errors(meta: MetaGraphEmulator) -> None:
    meta.add_pixel("111")
    bad = requests.get(f"{meta.base_url}/v21.0/111", params={"access_token": "nope"}, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "OAuthException" and bad.json()["error"]["code"] == 190
    expired = requests.get(f"{meta.base_url}/v21.0/111", params={"access_token": "old"}, timeout=5).json()
    assert (expired["error"]["code"], expired["error"]["error_subcode"]) == (190, 463)
    missing = requests.get(f"{meta.base_url}/v21.0/999", params={"access_token": "good"}, timeout=5)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == 100


def test_meta_conversions_api(meta: MetaGraphEmulator) -> None:
    meta.add_pixel("222")
    event = {"event_name": "Purchase", "event_time": int(time.time()), "action_source": "website",
             "user_data": {"em": ["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"]}}
    url = f"{meta.base_url}/v21.0/222/events"
    answer = requests.post(url, params={"access_token": "good"}, json={"data": [event, event]}, timeout=5).json()
    assert answer["events_received"] == 2 and answer["messages"] == [] and answer["fbtrace_id"]
    stale = dict(event, event_time=int(time.time()) - 8 * 24 * 3600)
    rejected = requests.post(url, data={"access_token": "good", "data": json.dumps([stale])},
                             timeout=5)
    assert rejected.status_code == 400 and rejected.json()["error"]["code"] == 100
    assert [e["event_name"] for e in meta.events] == ["Purchase", "Purchase"]


# -- Google Tag Manager -----------------------------------------------------------------------
def test_gtm_reads_container(gtm: GtmEmulator) -> None:
    gtm.add_container("6001", "7002", public_id="GTM-ABC1234", name="Server")
    url = f"{gtm.base_url}/tagmanager/v2/accounts/6001/containers/7002"
    container = requests.get(url, headers={"Authorization": "Bearer good"}, timeout=5).json()
    assert container["publicId"] == "GTM-ABC1234" and container["containerId"] == "7002"
    assert container["accountId"] == "6001" and container["path"] == "accounts/6001/containers/7002"
    listing = requests.get(f"{gtm.base_url}/tagmanager/v2/accounts/6001/containers",
                           headers={"Authorization": "Bearer good"}, timeout=5).json()
    assert [c["publicId"] for c in listing["container"]] == ["GTM-ABC1234"]
    gtm.add_tag("6001", "7002", "GA4 event", tag_type="sgtmgaaw")
    live = requests.get(f"{url}/versions:live", headers={"Authorization": "Bearer good"}, timeout=5).json()
    assert live["container"]["publicId"] == "GTM-ABC1234" and [t["name"] for t in live["tag"]] == ["GA4 event"]


def test_gtm_errors(gtm: GtmEmulator) -> None:
    gtm.add_container("6001", "7002")
    url = f"{gtm.base_url}/tagmanager/v2/accounts/6001/containers/7002"
    bad = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["error"]["status"] == "UNAUTHENTICATED"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer no-scope"}, timeout=5).status_code == 403
    unknown = requests.get(url.replace("7002", "7003"), headers={"Authorization": "Bearer good"}, timeout=5)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
    gtm.fail_next(1, status=503)
    unavailable = requests.get(url, headers={"Authorization": "Bearer good"}, timeout=5)
    assert unavailable.status_code == 503 and unavailable.json()["error"]["status"] == "UNAVAILABLE"
