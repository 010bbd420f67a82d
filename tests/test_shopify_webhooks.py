"""Shopify webhooks: duplicates as Shopify defines them, and the subscriptions Herald registers in
the shop itself (created with the source, renewed when its credentials change, removed with it),
against the Shopify emulator over real HTTP."""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import celery._state
import pytest
import sqlalchemy as sa
from flask import Flask

import workers.sources  # noqa: F401  (registers the sources.* tasks on the session app's Celery)
from app.extensions import db
from app.models import DataEvent, DataSource, ShopifyWebhookRegistration, ShopifyWebhookRemoval
from app.services import data_sources, shopify_webhooks
from app.sources import http
from app.sources.http import TransientProviderError
from app.sources.shopify_webhooks import TOPICS
from tests.emulators import ShopifyEmulator
from tests.support.accounts import signed_in
from tests.support.servers import serving
from tests.support.sources import WEBHOOK_SECRET, dumps, make_merchant, make_source, shopify_headers, shopify_order

TOKEN, NEW_TOKEN = "shpat_test_token", "shpat_rotated_token"
FAST = http.RetryPolicy(base_delay=0.01, max_delay=0.05, max_wait=2.0, read_timeout=5.0)
SOURCES = "/api/v1/data-sources"
PUBLIC = "https://herald.test"
CONFIG = {"shopDomain": "herald-test.myshopify.com", "accessToken": TOKEN, "webhookSecret": WEBHOOK_SECRET}


def pointed_at(app: Flask, base_url: str, **changes: Any) -> Any:
    settings = app.config["HERALD_SETTINGS"]
    urls = {**settings.api_base_urls, "SHOPIFY_API_BASE_URL": base_url}
    return dataclasses.replace(settings, api_base_urls=urls, **changes)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "DEFAULT_POLICY", FAST)


@pytest.fixture()
def shop(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopifyEmulator]:
    with ShopifyEmulator(valid_tokens={TOKEN, NEW_TOKEN}, restore_rate=1000.0, app_secret=WEBHOOK_SECRET) as emulator:
        monkeypatch.setitem(app.config, "HERALD_SETTINGS", pointed_at(app, emulator.base_url))
        yield emulator
        assert emulator.server_errors == []


def create(client, headers, **config: Any) -> dict:
    response = client.post(SOURCES, headers=headers, json={"sourceType": "shopify", "name": "Shop",
                                                            "config": CONFIG | config})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def register(source_id: str | uuid.UUID) -> ShopifyWebhookRegistration:
    shopify_webhooks.register(uuid.UUID(str(source_id)), policy=FAST)
    db.session.expire_all()
    return db.session.get_one(ShopifyWebhookRegistration, uuid.UUID(str(source_id)))


def address(source_id: str) -> str:
    return f"{PUBLIC}/ingest/shopify/{source_id}"


def registered(shop: ShopifyEmulator) -> set[tuple[str, str, str]]:
    return {(s["topic"], s["uri"], s["format"]) for s in shop.subscriptions()}


def mutations(shop: ShopifyEmulator, name: str) -> list[dict]:
    return [r.json["variables"] for r in shop.requests_to("/graphql.json") if name in (r.json or {}).get("query", "")]


def stored(source_id: Any) -> list[DataEvent]:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataEvent).where(DataEvent.data_source_id == uuid.UUID(str(source_id)))).all()


# -- duplicates ------------------------------------------------------------------------------------
def post(client, source_id: Any, body: bytes, **headers: str):
    return client.post(f"/ingest/shopify/{source_id}", data=body, headers=shopify_headers(body) | headers)


def test_the_same_event_id_twice_is_stored_once(client, app_ctx):
    source, _ = make_source(make_merchant(), "shopify")
    body = dumps(shopify_order())
    # One event delivered to two subscriptions: two webhook ids, one event id.
    first = post(client, source.id, body, **{"X-Shopify-Event-Id": "evt-1", "X-Shopify-Webhook-Id": "wh-a"})
    second = post(client, source.id, body, **{"X-Shopify-Event-Id": "evt-1", "X-Shopify-Webhook-Id": "wh-b"})
    assert (first.status_code, first.get_json()) == (202, {"accepted": 1, "duplicates": 0})
    assert (second.status_code, second.get_json()) == (200, {"accepted": 1, "duplicates": 1})
    other = post(client, source.id, body, **{"X-Shopify-Event-Id": "evt-2", "X-Shopify-Webhook-Id": "wh-c"})
    assert other.status_code == 202
    assert len(stored(source.id)) == 2


def test_a_retry_with_the_same_webhook_id_is_stored_once(client, app_ctx):
    source, _ = make_source(make_merchant(), "shopify")
    body = dumps(shopify_order())
    # Stored before Event-Id was read (only the webhook id is known), then retried with both.
    assert post(client, source.id, body, **{"X-Shopify-Webhook-Id": "wh-1"}).status_code == 202
    retry = post(client, source.id, body, **{"X-Shopify-Webhook-Id": "wh-1", "X-Shopify-Event-Id": "evt-9"})
    assert (retry.status_code, retry.get_json()) == (200, {"accepted": 1, "duplicates": 1})
    # Either key known makes a duplicate, in whichever order they come.
    again = post(client, source.id, body, **{"X-Shopify-Webhook-Id": "wh-2", "X-Shopify-Event-Id": "evt-9"})
    assert again.status_code == 200
    assert len(stored(source.id)) == 1


def test_an_unreasonably_long_event_id_is_kept_by_its_digest(client, app_ctx):
    source, _ = make_source(make_merchant(), "shopify")
    body = dumps(shopify_order())
    long_id = "e" * 5000
    assert post(client, source.id, body, **{"X-Shopify-Event-Id": long_id}).status_code == 202
    assert post(client, source.id, body, **{"X-Shopify-Event-Id": long_id}).status_code == 200
    assert len(stored(source.id)) == 1


# -- registration -----------------------------------------------------------------------------------
def test_creating_a_source_registers_every_topic_once(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers)
    assert created["webhooks"] == {"status": "pending", "topics": [], "address": None, "registeredAt": None,
                                   "lastError": None}

    row = register(created["id"])

    assert row.status == "registered" and row.last_error is None
    assert registered(shop) == {(topic, address(created["id"]), "JSON") for topic in TOPICS.values()}
    creates = mutations(shop, "webhookSubscriptionCreate")
    assert {c["topic"] for c in creates} == set(TOPICS.values())
    assert all(c["subscription"] == {"uri": address(created["id"]), "format": "JSON"} for c in creates)
    assert all(r.header("X-Shopify-Access-Token") == TOKEN for r in shop.requests)
    shown = client.get(f"{SOURCES}/{created['id']}", headers=headers).get_json()["webhooks"]
    assert shown["status"] == "registered" and shown["topics"] == sorted(TOPICS)
    assert shown["address"] == address(created["id"]) and shown["registeredAt"].endswith("+00:00")

    shopify_webhooks.request_registration(uuid.UUID(created["id"]))  # e.g. beat, or a second request
    db.session.commit()
    shop.clear_requests()
    assert register(created["id"]).status == "registered"
    assert len(shop.subscriptions()) == len(TOPICS)  # found and kept: nothing created twice
    assert mutations(shop, "webhookSubscriptionCreate") == []


def test_subscriptions_already_there_are_adopted_and_strays_removed(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers)
    mine = shop.webhooks.add("ORDERS_CREATE", address(created["id"]))  # wired by hand earlier
    shop.webhooks.add("ORDERS_CREATE", "https://elsewhere.example/hook")  # another app's business
    stray = shop.webhooks.add("PRODUCTS_CREATE", address(created["id"]))

    row = register(created["id"])

    assert row.subscriptions["ORDERS_CREATE"] == mine["id"]
    ids = {s["id"] for s in shop.subscriptions()}
    assert stray["id"] not in ids and len(ids) == len(TOPICS) + 1


def test_an_api_version_before_2025_10_registers_by_callback_url(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers, apiVersion="2025-07")
    assert register(created["id"]).status == "registered"
    creates = mutations(shop, "webhookSubscriptionCreate")
    assert creates and all(c["subscription"] == {"callbackUrl": address(created["id"]), "format": "JSON"}
                           for c in creates)
    assert all("/admin/api/2025-07/" in r.path for r in shop.requests)
    assert len(shop.subscriptions()) == len(TOPICS)


def test_new_credentials_replace_the_subscriptions(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers)
    url = f"{SOURCES}/{created['id']}"
    before = register(created["id"])
    old_ids, old_generation = set(before.subscriptions.values()), before.generation

    unrelated = client.patch(url, headers=headers, json={"config": {"backfillDays": 30}, "name": "Renamed"})
    assert unrelated.get_json()["webhooks"]["status"] == "registered"  # nothing to register again
    patched = client.patch(url, headers=headers, json={"config": {"accessToken": NEW_TOKEN}})
    assert patched.get_json()["webhooks"]["status"] == "pending"
    shop.clear_requests()

    row = register(created["id"])

    assert row.status == "registered" and row.generation == old_generation + 1
    current = {s["id"] for s in shop.subscriptions()}
    assert len(current) == len(TOPICS) and not current & old_ids
    deletes = [r for r in shop.requests if "webhookSubscriptionDelete" in r.json["query"]]
    assert {d.json["variables"]["id"] for d in deletes} == old_ids
    assert {d.header("X-Shopify-Access-Token") for d in deletes} == {TOKEN}  # removed with the token that made them
    creates = [r for r in shop.requests if "webhookSubscriptionCreate" in r.json["query"]]
    assert {c.header("X-Shopify-Access-Token") for c in creates} == {NEW_TOKEN}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ShopifyWebhookRemoval)) == 0


def test_a_config_change_during_registration_goes_round_again(client, app_ctx, shop, monkeypatch):
    _, headers = signed_in(client)
    created = create(client, headers)
    source_id = uuid.UUID(created["id"])
    real_reconcile, rounds = shopify_webhooks.shopify_webhooks.reconcile, []

    def reconcile_while_the_merchant_edits(client_, address_):
        made = real_reconcile(client_, address_)
        rounds.append(client_.session.headers["X-Shopify-Access-Token"])
        if len(rounds) == 1:
            data_sources.update_source(make_user_id(source_id), source_id, {"config": {"accessToken": NEW_TOKEN}})
        return made

    monkeypatch.setattr(shopify_webhooks.shopify_webhooks, "reconcile", reconcile_while_the_merchant_edits)
    row = register(source_id)

    assert rounds == [TOKEN, NEW_TOKEN]
    assert row.status == "registered" and row.generation == 2
    assert len(shop.subscriptions()) == len(TOPICS)  # the first round's were removed, none twice
    assert set(row.subscriptions.values()) == {s["id"] for s in shop.subscriptions()}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ShopifyWebhookRemoval)) == 0


def make_user_id(source_id: uuid.UUID) -> uuid.UUID:
    return db.session.get_one(DataSource, source_id).user_id


def test_deleting_the_source_removes_its_subscriptions(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers)
    register(created["id"])
    shop.webhooks.add("ORDERS_CREATE", "https://elsewhere.example/hook")

    assert client.delete(f"{SOURCES}/{created['id']}", headers=headers).status_code == 204
    (removal,) = db.session.scalars(sa.select(ShopifyWebhookRemoval)).all()
    assert removal.access_token.startswith("enc:v1:") and TOKEN not in removal.access_token
    removal_id = removal.id
    shopify_webhooks.remove(removal_id, policy=FAST)

    assert [s["uri"] for s in shop.subscriptions()] == ["https://elsewhere.example/hook"]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ShopifyWebhookRemoval)) == 0
    shopify_webhooks.remove(removal_id, policy=FAST)  # twice is harmless


def test_a_refused_token_fails_the_registration_without_retrying(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers, accessToken="shpat_revoked")

    row = register(created["id"])

    assert row.status == "failed" and "rejected the access token" in row.last_error
    assert "shpat_revoked" not in row.last_error
    assert len(shop.requests) == 1
    register(created["id"])  # the task delivered twice, or beat: a failed registration waits for the merchant
    assert len(shop.requests) == 1
    shown = client.get(f"{SOURCES}/{created['id']}", headers=headers).get_json()["webhooks"]
    assert shown["status"] == "failed" and "rejected the access token" in shown["lastError"]

    client.patch(f"{SOURCES}/{created['id']}", headers=headers, json={"config": {"accessToken": TOKEN}})
    assert register(created["id"]).status == "registered"


def test_an_address_shopify_refuses_is_a_failure_with_its_reason(client, app, app_ctx, shop, monkeypatch):
    monkeypatch.setitem(app.config, "HERALD_SETTINGS", pointed_at(app, shop.base_url,
                                                                  public_base_url="http://localhost:5000"))
    _, headers = signed_in(client)
    created = create(client, headers)
    row = register(created["id"])
    assert row.status == "failed" and row.last_error.endswith("Address protocol http:// is not supported")
    assert shop.subscriptions() == []


def test_an_outage_keeps_the_registration_pending_for_a_retry(client, app_ctx, shop):
    _, headers = signed_in(client)
    created = create(client, headers)
    shop.fail_next(FAST.attempts, status=503)

    with pytest.raises(TransientProviderError):
        shopify_webhooks.register(uuid.UUID(created["id"]), policy=FAST)

    db.session.expire_all()
    row = db.session.get_one(ShopifyWebhookRegistration, uuid.UUID(created["id"]))
    assert row.status == "pending" and "HTTP 503" in row.last_error and row.claim is None
    assert register(created["id"]).status == "registered"


def test_beat_registers_again_when_herald_moves(client, app, app_ctx, shop, monkeypatch):
    _, headers = signed_in(client)
    created = create(client, headers)
    register(created["id"])
    assert shopify_webhooks.resume_waiting() == 0  # nothing waits, nothing moved
    monkeypatch.setitem(app.config, "HERALD_SETTINGS", pointed_at(app, shop.base_url,
                                                                  public_base_url="https://hooks.herald.example"))

    assert shopify_webhooks.resume_waiting() == 1
    row = register(created["id"])

    assert row.callback_url == f"https://hooks.herald.example/ingest/shopify/{created['id']}"
    assert {s["uri"] for s in shop.subscriptions()} == {row.callback_url}
    assert len(shop.subscriptions()) == len(TOPICS)


# -- end to end, with a real worker -------------------------------------------------------------------
def test_a_worker_registers_shopify_delivers_and_deletion_removes(app, live_client, celery_worker, monkeypatch):
    monkeypatch.setattr(celery._state, "default_app", app.extensions["celery"])
    with ShopifyEmulator(valid_tokens={TOKEN}, restore_rate=1000.0, app_secret=WEBHOOK_SECRET) as shop, \
            serving(app) as herald:
        monkeypatch.setitem(app.config, "HERALD_SETTINGS", pointed_at(app, shop.base_url))
        _, headers = signed_in(live_client)
        created = create(live_client, headers)
        url = f"{SOURCES}/{created['id']}"
        wait_for(lambda: live_client.get(url, headers=headers).get_json()["webhooks"]["status"] == "registered")
        assert registered(shop) == {(topic, address(created["id"]), "JSON") for topic in TOPICS.values()}

        order = shopify_order()
        (first,) = shop.deliver("orders/create", order, event_id="evt-42", rewrite=(PUBLIC, herald))
        assert first.status == 202
        (second,) = shop.deliver("orders/create", order, event_id="evt-42", rewrite=(PUBLIC, herald))
        assert second.status == 200 and second.webhook_id != first.webhook_id
        assert shop.redeliver(first).status == 200
        with app.app_context():
            assert [e.event_type for e in stored(created["id"])] == ["orders/create"]
            db.session.remove()

        assert live_client.delete(url, headers=headers).status_code == 204
        wait_for(lambda: shop.subscriptions() == [])
        assert [kind for kind, _, _ in shop.webhooks.history].count("deleted") == len(TOPICS)


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
