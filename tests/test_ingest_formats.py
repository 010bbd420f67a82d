"""Ingest formats as the providers' own clients send them, through to what a merchant sees.

Meta's `facebook-business` SDK posts to Herald on a real port (both of its request shapes: the
synchronous `EventRequest`, a form whose `data` is a JSON array of JSON-encoded events with the token
in the query string, and `EventRequestAsync`, a form whose `data` is a JSON array of events with the
token beside it); Meta's curl (multipart) and JSON examples; GA4 Measurement-Protocol batches of web
and app streams; server-side GTM event data. Each is stored, processed, and checked on the contact,
its identities and its activity. Bad bodies are refused with the path of the bad field.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
import sqlalchemy as sa
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.event_request_async import EventRequestAsync
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession
from flask import Flask

from app.extensions import db
from app.models import Contact, ContactActivity, ContactIdentity, DataEvent, User
from app.services import event_processing
from tests.support.servers import serving
from tests.support.sources import capi_event, make_merchant, make_source


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _stored(source_id) -> list[DataEvent]:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataEvent).where(DataEvent.data_source_id == source_id)
                              .order_by(DataEvent.event_type)).all()


def _processed(user: User) -> list[Contact]:
    """Process what was ingested, then the merchant's contacts, oldest first."""
    event_processing.process_pending()
    db.session.expire_all()
    return db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id).order_by(Contact.created_at)).all()


def _activities(contact: Contact) -> dict[str, ContactActivity]:
    rows = db.session.scalars(sa.select(ContactActivity).where(ContactActivity.contact_id == contact.id))
    return {row.original_name: row for row in rows}


def _identities(contact: Contact) -> dict[str, str]:
    rows = db.session.execute(sa.select(ContactIdentity.kind, ContactIdentity.value)
                              .where(ContactIdentity.contact_id == contact.id))
    return {row.kind: row.value for row in rows}


def _error_at(response, *path: str | int) -> list[str]:
    errors = response.get_json()["errors"]
    for part in path:
        errors = errors[str(part)] if str(part) in errors else errors[part]
    return errors


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


# --- Meta Conversions API: the official SDK against Herald on a real port --------------------------

@pytest.fixture()
def graph_api(ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Herald on a real port, and the SDK's Graph API base URL (which both its request paths read)
    pointed at its CAPI route, as a merchant configures the SDK."""
    with serving(ctx) as url:
        monkeypatch.setattr(FacebookSession, "GRAPH", f"{url}/ingest/facebook-pixel")
        yield url
    FacebookAdsApi.set_default_api(None)


def _purchase(event_time: int, email: str, event_id: str) -> Event:
    return Event(
        event_name="Purchase", event_time=event_time, event_id=event_id, action_source=ActionSource.WEBSITE,
        event_source_url="https://shop.example/checkout/done",
        user_data=UserData(emails=[email], phones=["+1 (650) 555-1212"], first_names=["Grace"], country_codes=["us"],
                           states=["ca"], client_ip_address="203.0.113.7", client_user_agent="Mozilla/5.0",
                           fbp="fb.1.1558571054389.1098115397"),
        custom_data=CustomData(value=59.9, currency="EUR", order_id="1001",
                               contents=[Content(product_id="SKU_1", quantity=2), Content(product_id="SKU_2", quantity=1)]),
    )


def test_sdk_event_request_is_stored_and_resolves_hashed_and_plain_identities(graph_api: str) -> None:
    merchant = make_merchant()
    source, key = make_source(merchant, "facebook_pixel")
    now = int(time.time())
    # A customer first known by a plain email (a gateway sending plain values, as Meta's JSON allows).
    known = {"data": [capi_event("Lead", "lead-1", user_data={"em": "grace@example.com", "fn": "Grace"})]}
    assert requests.post(f"{graph_api}/ingest/facebook-pixel/{source.id}", json=known, headers={"X-Ingest-Key": key},
                         timeout=10).status_code == 202

    FacebookAdsApi.init(access_token=key)
    response = EventRequest(
        pixel_id=str(source.id), test_event_code="TEST12345", partner_agent="herald-tests",
        events=[_purchase(now - 60, "Grace@Example.com", "order-1001"),
                Event(event_name="ViewContent", event_time=now - 30, action_source=ActionSource.WEBSITE,
                      user_data=UserData(emails=["stranger@example.com"], external_ids=["crm-77"]))],
    ).execute()
    assert response.events_received == 2 and response.messages == [] and response.fbtrace_id

    stored = {event.event_type: event.event_data for event in _stored(source.id)}
    assert set(stored) == {"Lead", "Purchase", "ViewContent"}
    # What the SDK sent, as it sent it: hashed by Meta's rule, the token nowhere.
    assert stored["Purchase"]["user_data"]["em"] == [_sha256("grace@example.com")]
    assert stored["Purchase"]["user_data"]["ph"] == [_sha256("16505551212")]
    assert "access_token" not in json.dumps(stored)

    grace, stranger = _processed(merchant)
    # The hashed purchase found the contact its plain email made; the phone hash and country joined it.
    assert (grace.email, grace.first_name) == ("grace@example.com", "Grace")
    assert grace.attributes["country"] == "US"
    assert _identities(grace) == {"email": "grace@example.com", "email_sha256": _sha256("grace@example.com"),
                                  "phone_sha256": _sha256("16505551212")}
    purchase = _activities(grace)["Purchase"]
    assert purchase.event_type == "order_placed" and purchase.occurred_at == _utc(now - 60)
    assert purchase.properties["value"] == 59.9 and purchase.properties["currency"] == "EUR"
    assert purchase.properties["orderId"] == "1001" and purchase.properties["productIds"] == ["SKU_1", "SKU_2"]
    assert purchase.properties["itemCount"] == 3
    # Known only by hashes: a contact Herald can count and target by activity, but not email.
    assert stranger.email is None and stranger.phone is None
    assert stranger.external_ids == {"metaExternalId": "crm-77"}  # the SDK leaves external_id as given
    assert _identities(stranger)["email_sha256"] == _sha256("stranger@example.com")
    assert _activities(stranger)["ViewContent"].event_type == "product_viewed"

    # The SDK sends again (a retry): Meta's de-duplication rule, event_id + event_name, holds.
    again = EventRequest(pixel_id=str(source.id), events=[_purchase(now - 60, "grace@example.com", "order-1001")])
    assert again.execute().events_received == 1
    assert len(_stored(source.id)) == 3


def test_sdk_async_event_request_sends_a_form_with_the_token_beside_the_data(graph_api: str) -> None:
    merchant = make_merchant()
    source, key = make_source(merchant, "facebook_pixel")
    FacebookAdsApi.init(access_token=key)
    request = EventRequestAsync(pixel_id=str(source.id), test_event_code="TEST12345",
                                events=[_purchase(int(time.time()) - 5, "ada@example.com", "order-2002")])
    response = asyncio.run(request.execute())
    assert response.events_received == 1
    (stored,) = _stored(source.id)
    assert stored.event_data["event_id"] == "order-2002"
    (contact,) = _processed(merchant)
    assert contact.email is None and _identities(contact)["email_sha256"] == _sha256("ada@example.com")
    assert _activities(contact)["Purchase"].properties["orderId"] == "1001"


def test_sdk_sees_herald_refusals_as_graph_api_errors(graph_api: str) -> None:
    source, key = make_source(make_merchant(), "facebook_pixel")
    FacebookAdsApi.init(access_token="hik_not-the-key")
    with pytest.raises(FacebookRequestError) as refused:
        EventRequest(pixel_id=str(source.id), events=[_purchase(int(time.time()), "a@example.com", "x")]).execute()
    assert refused.value.http_status() == 401
    assert refused.value.api_error_message() == "Invalid ingest key." and refused.value.api_error_code() == 190

    FacebookAdsApi.init(access_token=key)
    stale = int(time.time()) - 8 * 24 * 3600
    with pytest.raises(FacebookRequestError) as invalid:
        EventRequest(pixel_id=str(source.id), events=[_purchase(stale, "a@example.com", "old")]).execute()
    assert invalid.value.http_status() == 422 and invalid.value.api_error_code() == 100
    assert "7 days" in json.dumps(invalid.value.body()["errors"]["data"]["0"]["event_time"])
    assert _stored(source.id) == []


# --- Meta Conversions API: the documentation's examples --------------------------------------------

@pytest.fixture()
def pixel(app_ctx):
    merchant = make_merchant()
    source, key = make_source(merchant, "facebook_pixel")
    return merchant, source, key


def test_metas_curl_example_multipart_form_with_the_token_as_a_field(client, pixel) -> None:
    merchant, source, key = pixel
    event = {
        "event_name": "Purchase", "event_time": int(time.time()) - 10, "action_source": "website",
        "user_data": {"em": [_sha256("jon@example.com")], "ph": [_sha256("16505551212"), _sha256("16505551213")],
                      "client_ip_address": "123.123.123.123", "client_user_agent": "curl/8",
                      "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
                      "fbp": "fb.1.1558571054389.1098115397"},
        "custom_data": {"currency": "usd", "value": 123.45,
                        "contents": [{"id": "product123", "quantity": 1, "delivery_category": "home_delivery"}]},
        "event_source_url": "http://jaspers-market.com/product/123",
    }
    response = client.post(f"/ingest/facebook-pixel/v21.0/{source.id}/events", content_type="multipart/form-data",
                           data={"data": json.dumps([event], indent=2), "access_token": key})
    assert response.status_code == 202
    assert response.get_json() | {"fbtrace_id": "-"} == {
        "accepted": 1, "duplicates": 0, "events_received": 1, "messages": [], "fbtrace_id": "-"}
    assert response.get_json()["fbtrace_id"] == response.headers["X-Request-ID"]
    (stored,) = _stored(source.id)
    assert stored.event_data == event
    (contact,) = _processed(merchant)
    assert _identities(contact) == {"email_sha256": _sha256("jon@example.com"), "phone_sha256": _sha256("16505551212")}
    activity = _activities(contact)["Purchase"]
    assert activity.properties["value"] == 123.45 and activity.properties["productIds"] == ["product123"]


@pytest.mark.parametrize("shape", ["json-query-token", "json-body-token", "json-encoded-events", "urlencoded-form"])
def test_other_capi_shapes(client, pixel, shape) -> None:
    merchant, source, key = pixel
    event = capi_event("AddToCart", "cart-1", user_data={"em": "Plain@Example.com", "external_id": "u-5"})
    url, options = f"/ingest/facebook-pixel/{source.id}", {}
    if shape == "json-query-token":  # Meta's JSON example: the token in the query string
        url, options = f"{url}?access_token={key}", {"json": {"data": [event]}}
    elif shape == "json-body-token":
        options = {"json": {"data": [event], "access_token": key, "test_event_code": "TEST1"}}
    elif shape == "json-encoded-events":
        options = {"json": {"data": [json.dumps(event)]}, "headers": {"X-Ingest-Key": key}}
    else:  # the SDK's own encoding, url-encoded, as requests sends it
        options = {"data": {"data": json.dumps([json.dumps(event)]), "access_token": key, "partner_agent": "p"}}
    response = client.post(url, **options)
    assert response.status_code == 202 and response.get_json()["accepted"] == 1
    (stored,) = _stored(source.id)
    assert stored.event_data == event  # the event only: no token, no batch fields
    (contact,) = _processed(merchant)
    assert contact.email == "plain@example.com" and contact.external_ids == {"metaExternalId": "u-5"}
    assert _activities(contact)["AddToCart"].event_type == "added_to_cart"


@pytest.mark.parametrize(("form", "path", "message"), [
    ({"test_event_code": "T"}, ["data"], "Missing data"),
    ({"data": "not json"}, ["data"], "Not valid JSON"),
    ({"data": "[]"}, ["data"], "between 1 and 1000"),
    ({"data": '{"event_name": "Lead"}'}, ["data"], "Not a valid list"),
    ({"data": '["{broken"]'}, ["data", 0], "Not valid JSON"),
    ({"data": '["[1, 2]"]'}, ["data", 0], "event object"),
    ({"data": "[3]"}, ["data", 0], "event object"),
    ({"data": json.dumps([json.dumps({"event_name": "Lead"})])}, ["data", 0, "event_time"], "unix time"),
])
def test_bad_capi_forms_are_refused_with_the_path(client, pixel, form, path, message) -> None:
    _, source, key = pixel
    response = client.post(f"/ingest/facebook-pixel/{source.id}", data={**form, "access_token": key})
    assert response.status_code == 422, response.get_json()
    assert message.lower() in " ".join(_error_at(response, *path)).lower()
    assert response.get_json()["error"]["code"] == 100  # Graph API's "invalid parameter", for Meta's SDKs
    assert _stored(source.id) == []


def test_large_and_hostile_capi_forms(client, pixel) -> None:
    _, source, key = pixel
    # A full batch as a form field is far over werkzeug's default 500 kB for one field: it is taken.
    padded = [capi_event("ViewContent", f"v{i}", custom_data={"note": "x" * 2500}) for i in range(1000)]
    response = client.post(f"/ingest/facebook-pixel/{source.id}", data={"data": json.dumps(padded), "access_token": key})
    assert response.status_code == 202 and response.get_json()["accepted"] == 1000
    for data in ["[" * 5000 + "]" * 5000, json.dumps([json.dumps(capi_event())] * 1001),
                 json.dumps(["[" * 5000 + "]" * 5000]), r'["\ud800"]']:
        refused = client.post(f"/ingest/facebook-pixel/{source.id}", data={"data": data, "access_token": key})
        assert refused.status_code == 422 and len(refused.get_data()) < 4096
    too_big = client.post(f"/ingest/facebook-pixel/{source.id}", data={"data": "x" * (6 * 1024 * 1024)},
                          headers={"X-Ingest-Key": key})
    assert too_big.status_code == 413
    assert len(_stored(source.id)) == 1000


def test_capi_authentication_in_every_place_a_client_puts_it(client, pixel) -> None:
    _, source, key = pixel
    body = {"data": [capi_event()]}
    url = f"/ingest/facebook-pixel/{source.id}"
    assert client.post(url, json=body).status_code == 401
    assert client.post(f"{url}?access_token=wrong", json=body).status_code == 401
    assert client.post(url, data={"data": json.dumps(body["data"]), "access_token": "wrong"}).status_code == 401
    unreadable = client.post(url, data=b"{not json", content_type="application/json")
    assert unreadable.status_code == 401  # no key could be read: nothing is said about the body
    assert unreadable.get_json()["error"] == {"message": "Invalid ingest key.", "type": "OAuthException",
                                              "code": 190, "fbtrace_id": unreadable.headers["X-Request-ID"]}
    assert client.post(f"/ingest/facebook-pixel/latest/{source.id}/events", json=body,
                       headers={"X-Ingest-Key": key}).status_code == 404
    assert _stored(source.id) == []


# --- GA4 Measurement Protocol and server-side GTM ----------------------------------------------

@pytest.fixture()
def gtm(app_ctx):
    merchant = make_merchant()
    source, key = make_source(merchant, "gtm")
    return merchant, source, key


def test_ga4_web_stream_batch_with_every_documented_field(client, gtm) -> None:
    merchant, source, key = gtm
    now = time.time()
    request_micros, event_micros = int((now - 3600) * 1_000_000), int((now - 120) * 1_000_000)
    batch = {
        "client_id": "1234567890.1700000000", "user_id": "customer-42", "timestamp_micros": request_micros,
        "user_properties": {"tier": {"value": "gold"}, "email": {"value": "Ada@Example.com"}},
        "non_personalized_ads": False, "validation_behavior": "RELAXED",
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "user_location": {"country_id": "GB"}, "device": {"category": "mobile"},
        "events": [
            {"name": "purchase", "timestamp_micros": event_micros, "a_field_from_next_year": {"kept": True}, "params": {
                "transaction_id": "T-1001", "value": 59.9, "currency": "EUR", "session_id": "123",
                "items": [{"item_id": "SKU_1", "quantity": 2}, {"item_id": "SKU_2"}]}},
            {"name": "page_view", "params": {"page_location": "https://shop.example/"}},
        ],
    }
    response = client.post(f"/ingest/gtm/{source.id}?measurement_id=G-ABC123", json=batch,
                           headers={"X-Ingest-Key": key})
    assert response.status_code == 202 and response.get_json() == {"accepted": 2, "duplicates": 0}
    stored = {event.event_type: event.event_data for event in _stored(source.id)}
    # Kept as sent: the request's fields on each event, the event's own time over the request's.
    assert stored["purchase"]["timestamp_micros"] == event_micros
    assert stored["page_view"]["timestamp_micros"] == request_micros
    assert stored["purchase"]["consent"] == batch["consent"] and stored["purchase"]["measurement_id"] == "G-ABC123"
    assert stored["purchase"]["a_field_from_next_year"] == {"kept": True}

    (contact,) = _processed(merchant)
    assert contact.email == "ada@example.com"
    assert contact.external_ids == {"ga4UserId": "customer-42", "ga4ClientId": "1234567890.1700000000"}
    activities = _activities(contact)
    purchase, page_view = activities["purchase"], activities["page_view"]
    assert purchase.occurred_at == _utc(event_micros / 1_000_000).replace(microsecond=event_micros % 1_000_000)
    assert page_view.occurred_at == _utc(request_micros / 1_000_000).replace(microsecond=request_micros % 1_000_000)
    assert purchase.event_type == "order_placed" and purchase.properties["itemCount"] == 3
    assert purchase.properties["tier"] == "gold" and purchase.properties["non_personalized_ads"] is False
    assert "email" not in purchase.properties
    assert page_view.properties["url"] == "https://shop.example/"


def test_ga4_app_stream_with_the_firebase_app_id_and_api_secret_in_the_query(client, gtm) -> None:
    merchant, source, key = gtm
    batch = {"app_instance_id": "cbd7a2c6b3a94e52b0a8fe8a5c1c2d41",
             "events": [{"name": "add_to_cart", "params": {"currency": "EUR", "value": 12, "items": [{"item_id": "A"}]}}]}
    url = f"/ingest/gtm/{source.id}?firebase_app_id=1:1234567890:android:321abc456def7890&api_secret={key}"
    response = client.post(url, json=batch)
    assert response.status_code == 202
    (stored,) = _stored(source.id)
    assert stored.event_data["firebase_app_id"] == "1:1234567890:android:321abc456def7890"
    (contact,) = _processed(merchant)
    assert contact.external_ids == {"ga4ClientId": "cbd7a2c6b3a94e52b0a8fe8a5c1c2d41"}
    assert _activities(contact)["add_to_cart"].properties == {
        "currency": "EUR", "value": 12.0, "productIds": ["A"], "itemCount": 1}


def _event_data(**overrides) -> dict:
    """Event data as a server container's GA4 client builds it, with the web tag's user-provided data."""
    return {
        "x-ga-protocol_version": "2", "x-ga-measurement_id": "G-FBVKWPGDPE", "x-ga-gtm_version": "2re540",
        "x-ga-page_id": 1940542384, "x-ga-system_properties": {"z": "ccd.tbB", "eu": "Q"},
        "client_id": "ZDoa3Sn32zo3RN66kguVogdtbQB1xZr/EBDR9gylXKA=.1647778941", "language": "en",
        "screen_resolution": "1536x960", "x-ga-request_count": 1, "ga_session_id": "1652075867",
        "ga_session_number": 18, "page_location": "https://shop.example/checkout/done",
        "page_referrer": "https://shop.example/cart", "page_title": "Thank you", "event_name": "purchase",
        "engagement_time_msec": 1, "x-ga-mp2-user_properties": {"_npa": "1"}, "ip_override": "80.221.59.110",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "x-ga-js_client_id": "2024456455.1647778941",
        "transaction_id": "T-77", "value": 30, "currency": "GBP", "items": [{"item_id": "SKU_9", "price": 30}],
        "user_data": {"email_address": "Ada@Example.com", "phone_number": "+44 20 7946 0958",
                      "address": {"first_name": "Ada", "last_name": "Lovelace", "country": "GB"}},
        **overrides,
    }


def test_server_side_gtm_event_data_one_object_or_a_list(client, gtm) -> None:
    merchant, source, key = gtm
    one = _event_data()
    response = client.post(f"/ingest/gtm/{source.id}", json=one, headers={"X-Ingest-Key": key})
    assert response.status_code == 202 and response.get_json() == {"accepted": 1, "duplicates": 0}
    assert client.post(f"/ingest/gtm/{source.id}", json=one, headers={"X-Ingest-Key": key}).get_json() == \
        {"accepted": 1, "duplicates": 1}
    more = [_event_data(event_name="page_view", user_data=None), _event_data(event_name="sign_up", user_data=None)]
    assert client.post(f"/ingest/gtm/{source.id}", json=more, headers={"X-Ingest-Key": key}).get_json() == \
        {"accepted": 2, "duplicates": 0}
    stored = {event.event_type: event.event_data for event in _stored(source.id)}
    assert stored["purchase"] == one  # as sent, x-ga keys and all

    (contact,) = _processed(merchant)
    assert (contact.email, contact.phone, contact.first_name, contact.last_name) == \
        ("ada@example.com", "+442079460958", "Ada", "Lovelace")
    assert contact.external_ids == {"ga4ClientId": one["client_id"]}
    activities = _activities(contact)
    assert set(activities) == {"purchase", "page_view", "sign_up"}  # the client id tied the later ones to Ada
    purchase = activities["purchase"].properties
    assert purchase["orderId"] == "T-77" and purchase["value"] == 30.0 and purchase["itemCount"] == 1
    assert purchase["url"] == "https://shop.example/checkout/done" and purchase["_npa"] == "1"
    assert not {"ip_override", "user_agent", "x-ga-page_id", "email_address"} & set(purchase)


@pytest.mark.parametrize(("body", "path", "message"), [
    ({}, ["events"], "required"),
    ({"client_id": "c", "events": []}, ["events"], "between 1 and 1000"),
    ({"events": [{"name": "page_view"}]}, ["client_id"], "app_instance_id"),
    ({"client_id": "c", "events": [{"name": "page_view", "timestamp_micros": 1700000000}]},
     ["events", 0, "timestamp_micros"], "seconds or milliseconds"),
    ({"client_id": "c", "events": [{"name": "page_view"}], "timestamp_micros": "yesterday"},
     ["timestamp_micros"], "microseconds"),
    ({"client_id": "c", "events": [{"name": "page_view", "timestamp_micros": int((time.time() + 86400) * 1e6)}]},
     ["events", 0, "timestamp_micros"], "future"),
    ({"client_id": True, "events": [{"name": "page_view"}]}, ["client_id"], "string"),
    ({"event_name": "  "}, ["event_name"], "blank"),
    ({"event_name": "purchase", "user_data": "ada@example.com"}, ["user_data"], "object"),
    ({"client_id": "c", "events": [{"name": "purchase", "params": [1]}]}, ["events", 0, "params"], "object"),
    ([{"event_name": "purchase"}, {"event_name": 5}], [1, "event_name"], "string"),
    ([], ["events"], "at least 1"),
])
def test_bad_ga4_bodies_are_refused_with_the_path(client, gtm, body, path, message) -> None:
    _, source, key = gtm
    response = client.post(f"/ingest/gtm/{source.id}", json=body, headers={"X-Ingest-Key": key})
    assert response.status_code == 422, response.get_json()
    assert message.lower() in " ".join(_error_at(response, *path)).lower()
    assert _stored(source.id) == []


@pytest.mark.parametrize("raw", [b"3", b'"purchase"', b"[1, 2]", b"{not json"])
def test_ga4_bodies_that_are_no_request_at_all(client, gtm, raw) -> None:
    _, source, key = gtm
    response = client.post(f"/ingest/gtm/{source.id}", data=raw, content_type="application/json",
                           headers={"X-Ingest-Key": key})
    assert response.status_code == 422 and response.get_json()["message"]
    assert client.post(f"/ingest/gtm/{source.id}?api_secret=wrong", json=_event_data()).status_code == 401
    assert _stored(source.id) == []


# --- The OpenAPI document ------------------------------------------------------------------------

def test_every_ingest_route_documents_its_body_with_examples(client) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    ingest = {path: item["post"] for path, item in paths.items() if path.startswith("/ingest/")}
    assert set(ingest) == {"/ingest/shopify/{source_id}", "/ingest/facebook-pixel/{source_id}",
                           "/ingest/facebook-pixel/{graph_version}/{source_id}/events", "/ingest/gtm/{source_id}"}
    for path, operation in ingest.items():
        content = operation["requestBody"]["content"]
        assert all("example" in body or body.get("examples") for body in content.values()), path
        assert {"202", "401", "422"} <= set(operation["responses"]), path
    capi = ingest["/ingest/facebook-pixel/{source_id}"]
    assert set(capi["requestBody"]["content"]) == {
        "application/json", "application/x-www-form-urlencoded", "multipart/form-data"}
    assert {p["name"] for p in capi["parameters"]} == {"X-Ingest-Key", "access_token"}
    assert set(capi["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1:]) == {
        "CapiAccepted"}
    ga4 = ingest["/ingest/gtm/{source_id}"]
    assert set(ga4["requestBody"]["content"]["application/json"]["examples"]) == {"web", "app", "sgtm"}
    assert {p["name"] for p in ga4["parameters"]} == {"X-Ingest-Key", "api_secret", "measurement_id", "firebase_app_id"}
