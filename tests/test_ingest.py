"""Ingest routes through HTTP: authentication, de-duplication, shapes, limits, one statement."""
from __future__ import annotations

import json
import uuid

import pytest
import redis as redis_lib
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from app.extensions import db
from app.models import DataEvent, EventFailure
from tests.conftest import TEST_REDIS_URL, make_app
from tests.support.sources import (
    capi_event,
    dumps,
    make_merchant,
    make_source,
    shopify_headers,
    shopify_order,
)


def _counts(response) -> dict[str, int]:
    """Herald's counts in an ingest answer (a CAPI answer also carries Meta's own fields)."""
    return {key: response.get_json()[key] for key in ("accepted", "duplicates")}


def _events(source_id) -> list[DataEvent]:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataEvent).where(DataEvent.data_source_id == source_id)).all()


@pytest.fixture()
def shopify(app_ctx):
    source, _ = make_source(make_merchant(), "shopify")
    return source


@pytest.fixture()
def pixel(app_ctx):
    return make_source(make_merchant(), "facebook_pixel")


@pytest.fixture()
def gtm(app_ctx):
    return make_source(make_merchant(), "gtm")


def test_signed_webhook_is_stored_once(client, shopify):
    body = dumps(shopify_order())
    headers = shopify_headers(body, webhook_id="wh-1")
    first = client.post(f"/ingest/shopify/{shopify.id}", data=body, headers=headers)
    assert first.status_code == 202 and first.get_json() == {"accepted": 1, "duplicates": 0}
    again = client.post(f"/ingest/shopify/{shopify.id}", data=body, headers=headers)
    assert again.status_code == 200 and again.get_json() == {"accepted": 1, "duplicates": 1}
    (stored,) = _events(shopify.id)
    assert stored.event_type == "orders/create" and stored.event_data == json.loads(body)
    assert stored.processed_at is None


@pytest.mark.parametrize("tamper", ["signature", "missing", "reserialized", "other-secret", "unknown-source"])
def test_bad_signatures_store_nothing(client, shopify, tamper):
    body = dumps(shopify_order())
    headers = shopify_headers(body)
    source_id = shopify.id
    if tamper == "signature":
        headers["X-Shopify-Hmac-Sha256"] = headers["X-Shopify-Hmac-Sha256"][::-1]
    elif tamper == "missing":
        del headers["X-Shopify-Hmac-Sha256"]
    elif tamper == "reserialized":  # same JSON, different bytes: the HMAC is over the raw body
        body = json.dumps(json.loads(body), indent=2).encode()
    elif tamper == "other-secret":
        headers = shopify_headers(body, secret="not-the-secret")
    else:
        source_id = uuid.uuid4()
    response = client.post(f"/ingest/shopify/{source_id}", data=body, headers=headers)
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"
    assert _events(shopify.id) == []


def test_webhook_shape_errors(client, shopify):
    body = b"not json"
    assert client.post(f"/ingest/shopify/{shopify.id}", data=body, headers=shopify_headers(body)).status_code == 422
    body = dumps(shopify_order())
    headers = shopify_headers(body)
    del headers["X-Shopify-Topic"]
    assert client.post(f"/ingest/shopify/{shopify.id}", data=body, headers=headers).status_code == 422
    assert _events(shopify.id) == []


def test_inactive_source_refuses(client, app_ctx):
    source, _ = make_source(make_merchant(), "shopify", status="inactive")
    body = dumps(shopify_order())
    assert client.post(f"/ingest/shopify/{source.id}", data=body, headers=shopify_headers(body)).status_code == 403


def test_ingest_body_limit_is_five_mib(client, shopify):
    big = dumps({**shopify_order(), "note": "x" * (2 * 1024 * 1024)})  # over the API's 1 MiB: fine here
    assert client.post(f"/ingest/shopify/{shopify.id}", data=big, headers=shopify_headers(big)).status_code == 202
    huge = dumps({**shopify_order(), "note": "x" * (5 * 1024 * 1024)})
    response = client.post(f"/ingest/shopify/{shopify.id}", data=huge, headers=shopify_headers(huge))
    assert response.status_code == 413 and response.is_json


def test_capi_batch_dedupes_by_event_id_and_name(client, pixel):
    source, key = pixel
    batch = {"data": [capi_event("Purchase", "order-1"), capi_event("AddToCart", "order-1"),
                      capi_event("PageView")]}
    response = client.post(f"/ingest/facebook-pixel/{source.id}", json=batch, headers={"X-Ingest-Key": key})
    assert response.status_code == 202 and _counts(response) == {"accepted": 3, "duplicates": 0}
    replay = client.post(f"/ingest/facebook-pixel/{source.id}", json=batch, headers={"X-Ingest-Key": key})
    assert _counts(replay) == {"accepted": 3, "duplicates": 3}
    assert sorted(e.event_type for e in _events(source.id)) == ["AddToCart", "PageView", "Purchase"]


@pytest.mark.parametrize("which", ["missing", "wrong", "other-source"])
def test_capi_bad_keys_store_nothing(client, app_ctx, pixel, which):
    source, key = pixel
    _, other_key = make_source(make_merchant(), "facebook_pixel")
    headers = {"missing": {}, "wrong": {"X-Ingest-Key": key + "x"}, "other-source": {"X-Ingest-Key": other_key}}[which]
    response = client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": [capi_event()]}, headers=headers)
    assert response.status_code == 401
    assert _events(source.id) == []


def test_pixel_key_does_not_open_a_gtm_route(client, pixel):
    source, key = pixel
    response = client.post(f"/ingest/gtm/{source.id}", json={"client_id": "c", "events": [{"name": "page_view"}]},
                           headers={"X-Ingest-Key": key})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "payload, path",
    [
        ({}, ["data"]),
        ({"data": "nope"}, ["data"]),
        ({"data": []}, ["data"]),
        ({"data": [capi_event()] * 1001}, ["data"]),
        ({"data": [capi_event(), {"event_time": 1}]}, ["data", "1", "event_name"]),
        ({"data": [capi_event(age_seconds=8 * 24 * 3600)]}, ["data", "0", "event_time"]),
        ({"data": [capi_event(event_time="yesterday")]}, ["data", "0", "event_time"]),
        ({"data": [capi_event(user_data="me")]}, ["data", "0", "user_data"]),
    ],
)
def test_capi_wrong_shapes_are_422_and_store_nothing(client, pixel, payload, path):
    source, key = pixel
    response = client.post(f"/ingest/facebook-pixel/{source.id}", json=payload, headers={"X-Ingest-Key": key})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    for part in path:
        errors = errors[part] if part in errors else errors[int(part)]
    assert errors
    assert _events(source.id) == []


def test_one_insert_statement_per_request(client, pixel):
    source, key = pixel
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        batch = {"data": [capi_event("ViewContent", f"e{i}") for i in range(500)]}
        response = client.post(f"/ingest/facebook-pixel/{source.id}", json=batch, headers={"X-Ingest-Key": key})
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert _counts(response) == {"accepted": 500, "duplicates": 0}
    assert len([s for s in statements if "INSERT" in s.upper()]) == 1
    assert len(_events(source.id)) == 500


def test_ga4_batch_keeps_the_envelope(client, gtm):
    source, key = gtm
    batch = {"client_id": "555.123", "user_id": "u-9", "user_properties": {"tier": {"value": "gold"}},
             "events": [{"name": "page_view", "params": {"page_location": "https://shop.test/"}},
                        {"name": "purchase", "params": {"value": 30, "currency": "EUR", "transaction_id": "T1"}}]}
    response = client.post(f"/ingest/gtm/{source.id}", json=batch, headers={"X-Ingest-Key": key})
    assert response.get_json() == {"accepted": 2, "duplicates": 0}
    assert client.post(f"/ingest/gtm/{source.id}", json=batch, headers={"X-Ingest-Key": key}).get_json() == \
        {"accepted": 2, "duplicates": 2}
    stored = {e.event_type: e.event_data for e in _events(source.id)}
    assert stored["purchase"] == {"client_id": "555.123", "user_id": "u-9",
                                  "user_properties": {"tier": {"value": "gold"}}, "name": "purchase",
                                  "params": {"value": 30, "currency": "EUR", "transaction_id": "T1"}}


@pytest.mark.parametrize("payload", [{"events": [{"name": "x"}]}, {"client_id": "c", "events": []},
                                     {"client_id": "c", "events": [{"name": "1bad"}]},
                                     {"client_id": "c", "events": [{"name": "ok", "params": "p"}]}])
def test_ga4_wrong_shapes(client, gtm, payload):
    source, key = gtm
    assert client.post(f"/ingest/gtm/{source.id}", json=payload, headers={"X-Ingest-Key": key}).status_code == 422
    assert _events(source.id) == []


def test_ingest_hints_processing_after_commit(client, pixel):
    source, key = pixel
    broker = redis_lib.Redis.from_url(TEST_REDIS_URL)
    client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": [capi_event()]}, headers={"X-Ingest-Key": key})
    client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": [capi_event("Lead")]},
                headers={"X-Ingest-Key": key})
    assert broker.llen("events") == 1  # debounced: one hint for the burst
    broker.close()


def _quarantined(source_id) -> dict[str, str]:
    """eventType → the quarantine reason, for the source's quarantined events."""
    rows = db.session.execute(
        sa.select(DataEvent.event_type, EventFailure.last_error)
        .join(EventFailure, EventFailure.data_event_id == DataEvent.id)
        .where(DataEvent.data_source_id == source_id, EventFailure.quarantined_at.is_not(None),
               DataEvent.processed_at.is_not(None))
    ).all()
    return {row.event_type: row.last_error for row in rows}


def test_one_event_with_a_nul_is_quarantined_and_its_batch_stored(client, pixel):
    source, key = pixel
    batch = [capi_event("ViewContent", f"e{i}") for i in range(999)]
    batch.append(capi_event("Search", "s1", custom_data={"search_string": "shoes\u0000red"}))
    response = client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": batch}, headers={"X-Ingest-Key": key})
    assert response.status_code == 202 and _counts(response) == {"accepted": 1000, "duplicates": 0}
    stored = _events(source.id)
    assert len(stored) == 1000 and sum(e.processed_at is None for e in stored) == 999
    (search,) = [e for e in stored if e.event_type == "Search"]
    assert search.event_data["custom_data"]["search_string"] == "shoes\ufffdred"
    assert "custom_data.search_string" in _quarantined(source.id)["Search"]
    replay = client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": batch}, headers={"X-Ingest-Key": key})
    assert _counts(replay) == {"accepted": 1000, "duplicates": 1000}


def test_lone_surrogates_and_nul_in_ga4_and_shopify_events_are_quarantined(client, gtm, app_ctx):
    source, key = gtm
    raw = (b'{"client_id": "c1", "events": [{"name": "page_view", "params": {"page_title": "ok"}},'
           b' {"name": "search", "params": {"search_term": "caf\\ud800"}}]}')
    response = client.post(f"/ingest/gtm/{source.id}", data=raw, content_type="application/json",
                           headers={"X-Ingest-Key": key})
    assert response.status_code == 202 and response.get_json() == {"accepted": 2, "duplicates": 0}
    assert set(_quarantined(source.id)) == {"search"} and "surrogate" in _quarantined(source.id)["search"]
    shop, _ = make_source(make_merchant(), "shopify")
    body = dumps({**shopify_order(), "note": "gift\u0000wrap"})
    response = client.post(f"/ingest/shopify/{shop.id}", data=body, headers=shopify_headers(body))
    assert response.status_code == 202
    (order,) = _events(shop.id)
    assert order.event_data["note"] == "gift\ufffdwrap" and set(_quarantined(shop.id)) == {"orders/create"}


@pytest.mark.parametrize("raw", [b'{"data": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b'{"data": "\xff"}',
                                 b'{"data": [' + b",".join([b'{"event_name": 1}'] * 200_000) + b"]}"])
def test_hostile_batches_are_refused_cheaply(client, pixel, raw):
    source, key = pixel
    response = client.post(f"/ingest/facebook-pixel/{source.id}", data=raw, content_type="application/json",
                           headers={"X-Ingest-Key": key})
    assert response.status_code == 422 and len(response.get_data()) < 4096
    assert _events(source.id) == []
def test_ingest_key_guessing_is_throttled_per_client(committed_db):
    app = make_app(INGEST_RATE_LIMIT_IP="3 per minute")
    client = app.test_client()
    with app.app_context():
        source, key = make_source(make_merchant(), "facebook_pixel")
        source_id = source.id
    url, body = f"/ingest/facebook-pixel/{source_id}", {"data": [capi_event(event_id="g1")]}

    def post(address: str, ingest_key: str):
        return client.post(url, json=body, headers={"X-Ingest-Key": ingest_key}, environ_base={"REMOTE_ADDR": address})

    for guess in range(3):
        assert post("198.51.100.7", f"hik_guess{guess}").status_code == 401
    refused = post("198.51.100.7", "hik_guess3")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    # Past the limit not even the right key is tried from there: guessing on learns nothing.
    assert post("198.51.100.7", key).status_code == 429
    # The merchant's gateway, elsewhere, is not held up by someone else's guesses.
    assert post("203.0.113.20", key).status_code == 202
    with app.app_context():
        assert len(_events(source_id)) == 1


def test_valid_ingest_keys_write_nothing_to_the_throttle(client, pixel):
    source, key = pixel
    for n in range(3):
        response = client.post(f"/ingest/facebook-pixel/{source.id}", json={"data": [capi_event(event_id=f"v{n}")]},
                               headers={"X-Ingest-Key": key})
        assert response.status_code == 202
    assert redis_lib.Redis.from_url(TEST_REDIS_URL).keys("herald:failures:*") == []
