"""Contact timezones derived from where Shopify addresses and events place a contact: the zone table,
the payloads that carry a place, and ingestion → processing → the contact as the API shows it, with
real PostgreSQL, the Shopify emulator and a real worker. The merchant's own zone always stands."""
from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import ContactTimezone, DataSource, User
from app.services import event_processing, source_syncs
from app.sources import geo_zones, http
from app.sources.normalize import DerivedZone, normalize
from tests.emulators import ShopifyEmulator
from tests.support.accounts import signed_in
from tests.support.sources import dumps, make_source, shopify_headers, shopify_order

CONTACTS = "/api/v1/contacts"
SHOPIFY_TOKEN = "shpat_test_token"  # the token tests.support.sources configures


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the table ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("country", "region", "zone"), [
    ("US", "CA", "America/Los_Angeles"),
    ("US", "us-ny", "America/New_York"),  # any case, with the ISO prefix
    ("CA", "BC", "America/Vancouver"),
    ("AU", "QLD", "Australia/Brisbane"),
    ("BR", "BR-AM", "America/Manaus"),
    ("MX", "Q ROO", "America/Cancun"),  # Shopify's code
    ("MX", "ROO", "America/Cancun"),  # ISO's
    ("RU", "KGD", "Europe/Kaliningrad"),
    ("ES", "TF", "Atlantic/Canary"),
    ("PT", "PT-20", "Atlantic/Azores"),  # Shopify writes the prefix
    ("FR", None, "Europe/Paris"),  # one zone: no region needed
    ("FR", "IDF", "Europe/Paris"),
    ("DE", None, "Europe/Berlin"),  # two zones, one clock
    ("US", None, None),  # ambiguous without a state
    ("US", "XX", None),
    ("CA", "NU", None),  # spans three zones: left out
    ("MX", "TAM", None),  # border cities on another clock: left out
    ("ID", "JK", None),  # several zones, no table
    ("ZZ", None, None),
    (None, "CA", None),
])
def test_the_table_answers_only_where_the_place_settles_the_zone(country, region, zone):
    assert geo_zones.zone_for(country, region) == zone


def test_the_table_agrees_with_tzdata():
    zones = {*geo_zones.COUNTRY_ZONES.values(), *geo_zones.REGION_ZONES.values()}
    listed = {zone for country_zones in geo_zones.ZONE_TAB.values() for zone in country_zones}
    assert zones <= available_timezones() and zones <= listed
    for country in {country for country, _ in geo_zones.REGION_ZONES}:
        assert len(geo_zones.ZONE_TAB[country]) > 1 and country not in geo_zones.COUNTRY_ZONES
    # Countries taken as one clock keep one clock: every 6 hours of the next three years.
    moments = [datetime.now(UTC) + timedelta(hours=6 * i) for i in range(4 * 365 * 3)]
    for country, zone in geo_zones._SAME_CLOCK.items():
        assert zone in geo_zones.ZONE_TAB[country]
        clocks = {tuple(m.astimezone(ZoneInfo(z)).utcoffset() for m in moments) for z in geo_zones.ZONE_TAB[country]}
        assert len(clocks) == 1, country


# -- payloads -------------------------------------------------------------------------------------
REST_CUSTOMER = {"id": 501, "email": "ana@example.com", "created_at": "2026-01-05T10:00:00Z",
                 "default_address": {"country_code": "US", "province_code": "CA", "zip": "94103"}}
GRAPHQL_CUSTOMER = {"id": "gid://shopify/Customer/502", "defaultEmailAddress": {"emailAddress": "b@example.com"},
                    "defaultAddress": {"countryCodeV2": "CA", "provinceCode": "QC", "zip": "H2X 1Y4"}}
ORDER = {**shopify_order(), "billing_address": {"country_code": "AU", "province_code": "VIC"}}


@pytest.mark.parametrize(("source", "topic", "payload", "zone"), [
    ("shopify", "customers/create", REST_CUSTOMER, DerivedZone("America/Los_Angeles", "shopify")),
    ("shopify", "customers/update", GRAPHQL_CUSTOMER, DerivedZone("America/Toronto", "shopify")),
    ("shopify", "customers/create", {**REST_CUSTOMER, "default_address": {"country_code": "US"}}, None),
    # An order's billing address is an event's place; its customer's default address outranks it.
    ("shopify", "orders/create", ORDER, DerivedZone("Australia/Melbourne", "event")),
    ("shopify", "orders/create", {**ORDER, "customer": {**ORDER["customer"], "default_address": {"country_code": "FR"}}},
     DerivedZone("Europe/Paris", "shopify")),
    # A shipping address may be a gift's: it says nothing of the buyer's zone.
    ("shopify", "orders/create", {**ORDER, "billing_address": None, "shipping_address": {"country_code": "FR"}}, None),
    ("gtm", "page_view", {"name": "page_view", "client_id": "c1",
                          "user_location": {"country_id": "US", "region_id": "US-NY", "city": "Albany"}},
     DerivedZone("America/New_York", "event")),
    # The user-provided address comes first; a location of the same country may add its region.
    ("gtm", "page_view", {"name": "page_view", "client_id": "c1", "user_data": {"address": {"country": "US"}},
                          "user_location": {"country_id": "US", "region_id": "US-TX"}},
     DerivedZone("America/Chicago", "event")),
    ("gtm", "page_view", {"name": "page_view", "client_id": "c1", "user_data": {"address": {"country": "US"}},
                          "user_location": {"country_id": "JP"}}, None),
    ("gtm", "page_view", {"name": "page_view", "client_id": "c1", "user_location": "Tokyo"}, None),
    # Meta hashes country and state like everything else.
    ("facebook_pixel", "Lead", {"event_name": "Lead", "event_time": 1767000000,
                                "user_data": {"country": [_sha("br")], "st": [_sha("rj")]}},
     DerivedZone("America/Sao_Paulo", "event")),
    ("facebook_pixel", "Lead", {"event_name": "Lead", "event_time": 1767000000,
                                "user_data": {"country": "us", "st": _sha("somewhere")}}, None),
])
def test_payloads_name_the_place_their_contact_is_in(source, topic, payload, zone):
    assert normalize(source, topic, payload).zone == zone


# -- through ingestion and processing -----------------------------------------------------------
@dataclasses.dataclass
class Merchant:
    client: FlaskClient
    headers: dict[str, str]
    user: User

    def source(self, source_type: str) -> tuple[DataSource, str | None]:
        return make_source(self.user, source_type)

    def contact(self, email: str) -> dict[str, Any]:
        (found,) = self.client.get(CONTACTS, headers=self.headers, query_string={"email": email}).get_json()
        return found

    def zone(self, email: str) -> tuple[str, str]:
        contact = self.contact(email)
        return contact["timezone"], contact["timezoneSource"]


def _merchant(client: FlaskClient) -> Merchant:
    tokens, headers = signed_in(client)
    return Merchant(client, headers, db.session.get(User, uuid.UUID(tokens["user"]["id"])))


@pytest.fixture()
def merchant(client, app_ctx) -> Merchant:
    return _merchant(client)


def webhook(merchant: Merchant, shop: DataSource, topic: str, payload: dict[str, Any]) -> None:
    body = dumps(payload)
    response = merchant.client.post(f"/ingest/shopify/{shop.id}", data=body, headers=shopify_headers(body, topic))
    assert response.status_code == 202, response.get_json()


def customer(email: str, address: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    return {"id": zlib.crc32(email.encode()), "email": email,
            "created_at": "2026-01-05T10:00:00Z", "updated_at": "2026-01-05T10:00:00Z",
            "default_address": address, **extra}


def ga4(merchant: Merchant, source: DataSource, key: str, email: str, location: dict[str, str]) -> None:
    body = {"client_id": f"c-{email}", "user_location": location,
            "events": [{"name": "page_view", "params": {"email": email}}]}
    response = merchant.client.post(f"/ingest/gtm/{source.id}", json=body, headers={"X-Ingest-Key": key})
    assert response.status_code == 202, response.get_json()


def process() -> None:
    event_processing.process_pending()


def stored_zones() -> dict[uuid.UUID, tuple[str, str]]:
    return {row.contact_id: (row.timezone, row.source) for row in db.session.scalars(sa.select(ContactTimezone))}


def test_a_shopify_customers_default_address_gives_their_zone(merchant):
    shop, _ = merchant.source("shopify")
    webhook(merchant, shop, "customers/create", customer("west@example.com", {"country_code": "US", "province_code": "CA"}))
    # Derived from the address, it outranks the phone number's region (New York).
    webhook(merchant, shop, "customers/create", customer("paris@example.com", {"country_code": "FR", "zip": "75001"},
                                                         phone="+12125550100"))
    webhook(merchant, shop, "customers/create", customer("somewhere@example.com", {"country_code": "US"}))
    process()
    assert merchant.zone("west@example.com") == ("America/Los_Angeles", "shopify")
    assert merchant.zone("paris@example.com") == ("Europe/Paris", "shopify")
    # The United States without a state says nothing: the merchant's default applies, nothing is stored.
    assert merchant.zone("somewhere@example.com") == ("UTC", "merchant_default")
    assert sorted(stored_zones().values()) == [("America/Los_Angeles", "shopify"), ("Europe/Paris", "shopify")]


def test_events_with_a_country_and_region_give_an_event_zone(merchant):
    gtm, key = merchant.source("gtm")
    shop, _ = merchant.source("shopify")
    ga4(merchant, gtm, key, "albany@example.com", {"country_id": "US", "region_id": "US-NY"})
    ga4(merchant, gtm, key, "nowhere@example.com", {"country_id": "US"})
    webhook(merchant, shop, "orders/create", {**shopify_order(email="mel@example.com", customer_id=77),
                                             "billing_address": {"country_code": "AU", "province_code": "VIC"}})
    process()
    assert merchant.zone("albany@example.com") == ("America/New_York", "event")
    assert merchant.zone("nowhere@example.com") == ("UTC", "merchant_default")
    assert merchant.zone("mel@example.com") == ("Australia/Melbourne", "event")


def test_the_merchants_zone_is_never_replaced_and_null_gives_it_back(merchant):
    shop, _ = merchant.source("shopify")
    gtm, key = merchant.source("gtm")
    created = merchant.client.post(CONTACTS, headers=merchant.headers,
                                   json={"email": "own@example.com", "timezone": "Asia/Tokyo"}).get_json()
    webhook(merchant, shop, "customers/update", customer("own@example.com", {"country_code": "US", "province_code": "CA"}))
    ga4(merchant, gtm, key, "own@example.com", {"country_id": "FR"})
    process()
    assert merchant.zone("own@example.com") == ("Asia/Tokyo", "contact")
    assert stored_zones()[uuid.UUID(created["id"])] == ("Asia/Tokyo", "merchant")

    # null takes the merchant's zone back; what events tell from then on is derived again.
    cleared = merchant.client.patch(f"{CONTACTS}/{created['id']}", headers=merchant.headers, json={"timezone": None})
    assert (cleared.get_json()["timezone"], cleared.get_json()["timezoneSource"]) == ("UTC", "merchant_default")
    ga4(merchant, gtm, key, "own@example.com", {"country_id": "US", "region_id": "US-IL"})
    process()
    assert merchant.zone("own@example.com") == ("America/Chicago", "event")

    # An import's null clears only the merchant's own zone: a derived one stays.
    imported = merchant.client.post(f"{CONTACTS}/import", headers=merchant.headers, json=[
        {"email": "own@example.com", "timezone": None},
        {"email": "set@example.com", "timezone": "Europe/Lisbon"},
    ]).get_json()
    assert (imported["created"], imported["updated"], imported["failed"]) == (1, 1, 0)
    assert merchant.zone("own@example.com") == ("America/Chicago", "event")
    assert merchant.zone("set@example.com") == ("Europe/Lisbon", "contact")
    merchant.client.post(f"{CONTACTS}/import", headers=merchant.headers, json=[{"email": "set@example.com", "timezone": None}])
    assert merchant.zone("set@example.com") == ("UTC", "merchant_default")


def test_a_newer_derived_zone_replaces_an_older_one_of_its_rank(merchant):
    shop, _ = merchant.source("shopify")
    gtm, key = merchant.source("gtm")
    webhook(merchant, shop, "customers/create", customer("mover@example.com", {"country_code": "US", "province_code": "CA"}))
    ga4(merchant, gtm, key, "tracked@example.com", {"country_id": "US", "region_id": "US-NY"})
    process()
    # Browsing from elsewhere does not move a customer's address book; a new address does.
    ga4(merchant, gtm, key, "mover@example.com", {"country_id": "JP"})
    ga4(merchant, gtm, key, "tracked@example.com", {"country_id": "JP"})
    process()
    assert merchant.zone("mover@example.com") == ("America/Los_Angeles", "shopify")
    assert merchant.zone("tracked@example.com") == ("Asia/Tokyo", "event")
    webhook(merchant, shop, "customers/update", customer("mover@example.com", {"country_code": "CA", "province_code": "AB"}))
    webhook(merchant, shop, "customers/update", customer("tracked@example.com", {"country_code": "DE"}))
    process()
    assert merchant.zone("mover@example.com") == ("America/Edmonton", "shopify")
    assert merchant.zone("tracked@example.com") == ("Europe/Berlin", "shopify")
    # A merchant's null leaves a derived zone alone.
    contact = merchant.contact("mover@example.com")
    merchant.client.patch(f"{CONTACTS}/{contact['id']}", headers=merchant.headers, json={"timezone": None})
    assert merchant.zone("mover@example.com") == ("America/Edmonton", "shopify")


def test_a_batch_stores_its_zones_in_one_statement(merchant):
    shop, _ = merchant.source("shopify")
    for i in range(40):
        webhook(merchant, shop, "customers/create",
                customer(f"c{i}@example.com", {"country_code": "BR", "province_code": "SP" if i % 2 else "AM"}))
    # Within a batch the customer's address outranks an order's billing address, whatever the order.
    webhook(merchant, shop, "orders/create", {**shopify_order(email="c0@example.com", customer_id=customer(
        "c0@example.com", None)["id"]), "billing_address": {"country_code": "FR"}})
    statements: list[str] = []

    def count(conn, cursor, statement, *args: Any) -> None:
        if "contact_timezones" in statement:
            statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        assert event_processing.process_batch() == 41
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    assert len(statements) == 1 and statements[0].lstrip().startswith("INSERT")
    zones = sorted(zone for zone, _ in stored_zones().values())
    assert zones == ["America/Manaus"] * 20 + ["America/Sao_Paulo"] * 20
    assert merchant.zone("c0@example.com") == ("America/Manaus", "shopify")


# -- the Admin API sync ---------------------------------------------------------------------------
@pytest.fixture()
def shop_api(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopifyEmulator]:
    with ShopifyEmulator(valid_tokens={SHOPIFY_TOKEN}, restore_rate=1000.0) as emulator:
        settings = app.config["HERALD_SETTINGS"]
        urls = {**settings.api_base_urls, "SHOPIFY_API_BASE_URL": emulator.base_url}
        monkeypatch.setitem(app.config, "HERALD_SETTINGS", dataclasses.replace(settings, api_base_urls=urls))
        yield emulator


def test_the_admin_api_customer_sync_gives_zones(merchant, shop_api):
    long_ago = datetime.now(UTC) - timedelta(days=2)
    shop_api.add_customer(email="van@example.com", created_at=long_ago,
                          defaultAddress={"countryCodeV2": "CA", "provinceCode": "BC", "zip": "V6B 1A1"})
    buyer = shop_api.add_customer(email="rio@example.com", created_at=long_ago)
    shop_api.add_order(customer=buyer, created_at=long_ago,
                       billingAddress={"countryCodeV2": "BR", "provinceCode": "RJ", "firstName": "Rio"})
    shop, _ = merchant.source("shopify")
    run = source_syncs.request_sync(merchant.user.id, shop.id)
    source_syncs.run_sync(run.id, policy=http.RetryPolicy(base_delay=0.01, max_delay=0.05, max_wait=2.0))
    process()
    assert merchant.zone("van@example.com") == ("America/Vancouver", "shopify")
    assert merchant.zone("rio@example.com") == ("America/Sao_Paulo", "event")


# -- a real worker --------------------------------------------------------------------------------
def test_a_real_worker_derives_the_zone_of_an_ingested_customer(app, live_client, celery_worker):
    with app.app_context():
        merchant = _merchant(live_client)
        shop, _ = merchant.source("shopify")
        webhook(merchant, shop, "customers/create",
                customer("worker@example.com", {"country_code": "US", "province_code": "WA"}))
        deadline = time.monotonic() + 20
        while not stored_zones() and time.monotonic() < deadline:
            db.session.rollback()
            time.sleep(0.1)
        assert merchant.zone("worker@example.com") == ("America/Los_Angeles", "shopify")
