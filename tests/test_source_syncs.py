"""Source syncs against the provider emulators over real HTTP, with real PostgreSQL and Redis.

The session app's outbound base URLs are pointed at the emulators for one test at a time
(monkeypatch restores them), so the transactional `app_ctx` isolation and the standard
`celery_worker` fixture both apply. Waits are shortened through the retry policy.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import celery._state
import pytest
import redis as redis_lib
import sqlalchemy as sa
from flask import Flask

import workers.sources  # noqa: F401  (registers the sources.* tasks on the session app's Celery)
from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import DataEvent, DataSource, EventDedupeKey, SyncRun, User, utcnow
from app.security.secret_box import encrypt_fields
from app.services import source_syncs
from app.sources import http, shopify
from app.sources.configs import SECRET_FIELDS
from app.sources.normalize import normalize
from tests.conftest import TEST_REDIS_URL
from tests.emulators import GtmEmulator, MetaGraphEmulator, ShopifyEmulator

TOKEN = "shpat_test_token"
FAST = http.RetryPolicy(base_delay=0.01, max_delay=0.05, max_wait=2.0, read_timeout=5.0)
LONG_AGO = datetime.now(UTC) - timedelta(days=2)
GTM_CONFIG = {"containerId": "GTM-ABC1234", "accountId": "6001234567", "apiContainerId": "98765432"}


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


def point(app: Flask, monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    settings = app.config["HERALD_SETTINGS"]
    urls = {**settings.api_base_urls, name: url}
    monkeypatch.setitem(app.config, "HERALD_SETTINGS", dataclasses.replace(settings, api_base_urls=urls))


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "DEFAULT_POLICY", FAST)


@pytest.fixture()
def shop(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopifyEmulator]:
    # A fast-refilling bucket: cost waits are tested on purpose, not paid by every test.
    with ShopifyEmulator(valid_tokens={TOKEN}, restore_rate=1000.0) as emulator:
        point(app, monkeypatch, "SHOPIFY_API_BASE_URL", emulator.base_url)
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture()
def meta(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetaGraphEmulator]:
    with MetaGraphEmulator(valid_tokens={"meta-good"}, expired_tokens={"meta-old"}) as emulator:
        point(app, monkeypatch, "META_GRAPH_API_BASE_URL", emulator.base_url)
        yield emulator


@pytest.fixture()
def google(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[GtmEmulator]:
    with GtmEmulator(valid_tokens={"gtm-good"}, forbidden_tokens={"gtm-no-scope"}) as emulator:
        point(app, monkeypatch, "GTM_API_BASE_URL", emulator.base_url)
        yield emulator


def make_source(source_type: str, config: dict[str, Any], status: str = "active") -> DataSource:
    user = User(email=f"{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
    db.session.add(user)
    db.session.flush()
    source = DataSource(user_id=user.id, source_type=source_type, name=source_type, status=status,
                        config=encrypt_fields(config, SECRET_FIELDS[source_type]))
    db.session.add(source)
    db.session.commit()
    return source


def shopify_source(**config: Any) -> DataSource:
    return make_source("shopify", {"shopDomain": "herald-test.myshopify.com", "accessToken": TOKEN,
                                   "webhookSecret": "whsec", **config})


def sync(source: DataSource, policy: http.RetryPolicy = FAST) -> SyncRun:
    run = source_syncs.request_sync(source.user_id, source.id)
    source_syncs.run_sync(run.id, policy=policy)
    db.session.expire_all()
    return db.session.get(SyncRun, run.id)


def apply_task(app: Flask, run: SyncRun) -> None:
    # The session app's own task, so it runs in this test's transaction and settings.
    app.extensions["celery"].tasks["sources.sync"].apply(args=[str(run.id)])
    db.session.expire_all()


def event_counts(source: DataSource) -> dict[str, int]:
    rows = db.session.execute(sa.select(DataEvent.event_type, sa.func.count()).where(
        DataEvent.data_source_id == source.id).group_by(DataEvent.event_type)).all()
    return dict(rows)


def fill_shop(shop: ShopifyEmulator, customers: int = 3, orders: int = 2, checkouts: int = 1) -> list[dict]:
    people = [shop.add_customer(email=f"c{i}@example.com", first_name=f"C{i}", created_at=LONG_AGO)
              for i in range(customers)]
    for i in range(orders):
        shop.add_order(customer=people[i % customers], total="25.00", created_at=LONG_AGO)
    for i in range(checkouts):
        shop.add_abandoned_checkout(customer=people[i % customers], created_at=LONG_AGO)
    return people


# -- Shopify --------------------------------------------------------------------------------------
def test_first_sync_backfills_every_page_and_stores_each_record_once(app_ctx, shop):
    fill_shop(shop, customers=250, orders=30, checkouts=5)
    shop.add_customer(email="ancient@example.com", created_at=datetime.now(UTC) - timedelta(days=40))
    source = shopify_source(backfillDays=30)

    run = sync(source)

    assert run.status == "succeeded" and run.finished_at is not None and run.error is None
    assert event_counts(source) == {"customers/update": 250, "orders/create": 30, "checkouts/create": 5}
    assert run.events_created == 285
    assert run.details["customers"] == {"fetched": 250, "created": 250}
    assert run.details["orders"] == {"fetched": 30, "created": 30}
    assert "claim" not in run.details
    customer_calls = shop.arguments_seen("customers")
    assert [c["first"] for c in customer_calls] == [100, 100, 100]
    assert customer_calls[0]["after"] is None and all(c["after"] for c in customer_calls[1:])
    assert all(c["sortKey"] == "UPDATED_AT" for c in customer_calls)
    since = run.started_at - timedelta(days=30)
    assert customer_calls[0]["query"] == shopify.search_since(since)
    assert shop.arguments_seen("abandonedCheckouts")[0]["sortKey"] == "ID"
    assert all(r.header("X-Shopify-Access-Token") == TOKEN for r in shop.requests)
    assert db.session.get(DataSource, source.id).last_sync_at == run.started_at
    stored = db.session.scalars(sa.select(DataEvent.event_data).where(DataEvent.event_type == "orders/create")).first()
    assert stored["id"].startswith("gid://shopify/Order/") and stored["totalPriceSet"]["shopMoney"]["amount"]


def test_later_syncs_are_incremental_and_never_store_twice(app_ctx, shop):
    people = fill_shop(shop)
    source = shopify_source()
    first = sync(source)
    order = shop.records("orders")[0]
    shop.update_record(people[0]["id"], first_name="Changed")
    shop.update_record(order["id"], tags=["shipped"])  # an edited order is not a second order
    shop.add_order(customer=people[1], total="99.00")
    shop.clear_requests()

    second = sync(source)

    expected_since = first.started_at - shopify.SYNC_OVERLAP
    assert {c["query"] for c in shop.arguments_seen("customers")} == {shopify.search_since(expected_since)}
    assert second.details["customers"] == {"fetched": 1, "created": 1}
    assert second.details["orders"] == {"fetched": 2, "created": 1}
    assert second.events_created == 2
    assert event_counts(source) == {"customers/update": 4, "orders/create": 3, "checkouts/create": 1}

    db.session.get(DataSource, source.id).last_sync_at = None  # a full backfill again: all known
    db.session.commit()
    third = sync(source)
    assert third.status == "succeeded" and third.events_created == 0
    assert event_counts(source) == {"customers/update": 4, "orders/create": 3, "checkouts/create": 1}


def test_an_old_order_edited_after_its_key_was_purged_is_not_a_new_order(app_ctx, shop):
    fill_shop(shop, customers=1, orders=1, checkouts=0)
    source = shopify_source()
    sync(source)
    db.session.execute(sa.delete(EventDedupeKey))  # as the retention purge does after a few days
    db.session.commit()
    shop.update_record(shop.records("orders")[0]["id"], tags=["refunded"])

    run = sync(source)

    assert run.details["orders"] == {"fetched": 1, "created": 0}
    assert event_counts(source)["orders/create"] == 1


@pytest.mark.parametrize("version, asked, not_asked", [
    ("2025-10", "defaultEmailAddress", "emailMarketingConsent"),
    ("2025-01", "emailMarketingConsent", "defaultEmailAddress"),  # before 2025-04 only the older fields exist
])
def test_customers_are_pulled_with_the_consent_fields_of_their_api_version(app_ctx, shop, version, asked, not_asked):
    shop.add_customer(email="opted@example.com", email_marketing=True, created_at=LONG_AGO)
    source = shopify_source(apiVersion=version)

    run = sync(source)

    assert run.status == "succeeded", run.error
    queries = [r.json["query"] for r in shop.requests if "customers(" in r.json["query"]]
    assert queries and all(asked in q and not_asked not in q for q in queries)
    stored = db.session.scalars(sa.select(DataEvent.event_data).where(DataEvent.data_source_id == source.id,
                                                                       DataEvent.event_type == "customers/update")).one()
    assert normalize("shopify", "customers/update", stored).consent == {"email": "subscribed"}


def test_the_emulator_refuses_fields_a_version_lacks(shop):
    query = "{ customers(first: 1) { nodes { id defaultEmailAddress { emailAddress } } } }"
    assert shop.execute(query, {}, version="2025-01")["errors"][0]["message"] == \
        "Field 'defaultEmailAddress' doesn't exist on type 'Customer'"
    assert "errors" not in shop.execute(query, {}, version="2025-04")


def test_throttling_and_429_are_waited_out(app_ctx, shop):
    fill_shop(shop)
    source = shopify_source()
    shop.drain_bucket(to=0)  # the first query finds the cost bucket empty: THROTTLED
    shop.rate_limit_next(1, retry_after=0.2)
    sleep = RecordingSleep()

    run = sync(source, dataclasses.replace(FAST, sleep=sleep))

    assert run.status == "succeeded" and run.events_created == 6
    assert 0.2 in sleep.waits  # Retry-After "0.2" honoured as decimal seconds
    # the empty bucket was waited for (a 602-point query refilling at 1000 points/s), not hammered
    assert any(0.3 < wait <= 0.7 for wait in sleep.waits)
    # three pages, one 429, and a THROTTLED answer at most for each query whose cost is not yet known
    assert shop.call_count() <= 3 + 1 + 3


def test_forced_throttle_answer_is_retried(app_ctx, shop):
    fill_shop(shop)
    shop.throttle_next(2)
    run = sync(shopify_source())
    assert run.status == "succeeded" and run.events_created == 6


def test_server_errors_are_retried_within_the_run(app_ctx, shop):
    fill_shop(shop)
    shop.fail_next(2, status=502)
    run = sync(shopify_source())
    assert run.status == "succeeded" and run.events_created == 6
    assert shop.call_count() == 5


def test_an_outage_retries_the_task_and_finally_fails_the_run(app, app_ctx, shop):
    fill_shop(shop)
    source = shopify_source()
    run = source_syncs.request_sync(source.user_id, source.id)
    shop.fail_next(1000, status=503)

    apply_task(app, run)

    run = db.session.get(SyncRun, run.id)
    assert run.status == "failed" and "HTTP 503" in run.error
    assert db.session.get(DataSource, source.id).status == "active"  # an outage is not the merchant's fault
    attempts = FAST.attempts * 6  # the first execution and five retries
    assert shop.call_count() == attempts


def test_an_interrupted_run_resumes_from_its_last_stored_page(app, app_ctx, shop, monkeypatch):
    fill_shop(shop, customers=250)
    source = shopify_source()
    run = source_syncs.request_sync(source.user_id, source.id)
    real_fetch, calls = shopify.ShopifyClient.fetch_page, []

    def flaky_fetch(self, resource, since, after):
        calls.append(after)
        if len(calls) == 2:
            raise http.TransientProviderError("Shopify could not be reached (ConnectTimeout)")
        return real_fetch(self, resource, since, after)

    monkeypatch.setattr(shopify.ShopifyClient, "fetch_page", flaky_fetch)
    with pytest.raises(http.TransientProviderError):
        source_syncs.run_sync(run.id, policy=FAST)
    db.session.expire_all()
    assert db.session.get(SyncRun, run.id).details["lastError"].startswith("Shopify could not be reached")
    source_syncs.run_sync(run.id, policy=FAST)

    db.session.expire_all()
    run = db.session.get(SyncRun, run.id)
    assert run.status == "succeeded" and run.events_created == 250 + 2 + 1
    assert [c["after"] is None for c in shop.arguments_seen("customers")] == [True, False, False]
    assert "lastError" not in run.details


def test_a_spent_time_budget_continues_the_run_in_a_fresh_task(app_ctx, shop, monkeypatch):
    fill_shop(shop, customers=250)
    source = shopify_source()
    run = source_syncs.request_sync(source.user_id, source.id)
    monkeypatch.setattr(source_syncs, "TIME_BUDGET", 0.0)
    broker = redis_lib.Redis.from_url(TEST_REDIS_URL)

    source_syncs.run_sync(run.id, policy=FAST)  # one page, then a continuation is queued
    db.session.expire_all()
    assert db.session.get(SyncRun, run.id).status == "running"
    assert broker.llen("sources") == 2  # the request's task and the continuation
    broker.close()
    executions = 1
    while db.session.get(SyncRun, run.id).status == "running":
        source_syncs.run_sync(run.id, policy=FAST)
        db.session.expire_all()
        executions += 1

    assert executions == 3  # a page of progress each time; orders and checkouts fit in the last one
    assert len(shop.arguments_seen("customers")) == 3  # nothing fetched twice
    assert db.session.get(SyncRun, run.id).events_created == 253


def test_revoked_token_puts_the_source_in_error_without_retrying(app, app_ctx, shop):
    fill_shop(shop)
    source = shopify_source()
    shop.valid_tokens.discard(TOKEN)
    run = source_syncs.request_sync(source.user_id, source.id)

    apply_task(app, run)

    run = db.session.get(SyncRun, run.id)
    assert run.status == "failed" and "rejected the access token" in run.error and TOKEN not in run.error
    assert db.session.get(DataSource, source.id).status == "error"
    assert shop.call_count() == 1
    assert db.session.get(DataSource, source.id).last_sync_at is None


def test_a_shop_domain_outside_shopify_is_refused_without_a_request(app_ctx, monkeypatch):
    point(app_ctx, monkeypatch, "SHOPIFY_API_BASE_URL", "")
    source = shopify_source(shopDomain="169.254.169.254")
    run = sync(source)
    assert run.status == "failed" and "myshopify.com" in run.error
    assert db.session.get(DataSource, source.id).status == "error"


def test_a_run_no_longer_running_is_left_alone(app_ctx, shop):
    source = shopify_source()
    run = source_syncs.request_sync(source.user_id, source.id)
    run.status, run.error = "failed", "worker lost"
    db.session.commit()
    source_syncs.run_sync(run.id, policy=FAST)
    assert shop.call_count() == 0


# -- starting and settling runs -----------------------------------------------------------------------
def test_two_requests_start_one_run(app_ctx):
    source = shopify_source()
    first = source_syncs.request_sync(source.user_id, source.id)
    second = source_syncs.request_sync(source.user_id, source.id)
    assert first.id == second.id and first.trigger == "manual"
    running = db.session.scalar(sa.select(sa.func.count()).select_from(SyncRun).where(SyncRun.status == "running"))
    assert running == 1
    broker = redis_lib.Redis.from_url(TEST_REDIS_URL)
    assert broker.llen("sources") == 1  # one task published, after the commit
    broker.close()


def test_request_sync_hides_other_users_sources_and_refuses_inactive_ones(app_ctx):
    source = shopify_source()
    with pytest.raises(NotFound):
        source_syncs.request_sync(uuid.uuid4(), source.id)
    inactive = shopify_source()
    inactive.status = "inactive"
    db.session.commit()
    with pytest.raises(Conflict):
        source_syncs.request_sync(inactive.user_id, inactive.id)


def test_schedule_all_skips_inactive_sources_and_sources_already_running(app_ctx):
    idle, busy = shopify_source(), shopify_source()
    make_source("gtm", GTM_CONFIG | {"accessToken": "t"}, status="inactive")
    make_source("gtm", GTM_CONFIG | {"accessToken": "t"}, status="error")
    busy_run = source_syncs.request_sync(busy.user_id, busy.id)

    assert source_syncs.schedule_all() == 1
    assert source_syncs.schedule_all() == 0
    runs = db.session.scalars(sa.select(SyncRun).where(SyncRun.status == "running")).all()
    assert {(r.data_source_id, r.trigger) for r in runs} == {(idle.id, "schedule"), (busy.id, "manual")}
    assert busy_run.id in {r.id for r in runs}


def test_reaper_fails_runs_whose_lease_expired(app_ctx):
    lost_source, live_source = shopify_source(), shopify_source()
    lost = source_syncs.request_sync(lost_source.user_id, lost_source.id)
    live = source_syncs.request_sync(live_source.user_id, live_source.id)
    lost.lease_expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()

    assert source_syncs.reap_stale_syncs() == 1

    db.session.expire_all()
    assert (lost.status, lost.error) == ("failed", source_syncs.WORKER_LOST)
    assert live.status == "running"
    again = source_syncs.request_sync(lost_source.user_id, lost_source.id)
    assert again.id != lost.id and again.status == "running"


# -- Meta pixel and GTM ------------------------------------------------------------------------------
def test_pixel_sync_verifies_the_connection(app_ctx, meta):
    meta.add_pixel("123456789012345", name="Shop pixel")
    source = make_source("facebook_pixel", {"pixelId": "123456789012345", "accessToken": "meta-good"})
    run = sync(source)
    assert run.status == "succeeded" and run.events_created == 0
    assert run.details == {"pixel": {"id": "123456789012345", "name": "Shop pixel"}}
    (request,) = meta.requests
    assert request.path == "/v21.0/123456789012345" and "access_token" not in request.query
    assert db.session.get(DataSource, source.id).last_sync_at == run.started_at


def test_pixel_rate_limit_answer_is_waited_out(app_ctx, meta):
    meta.add_pixel("123456789012345")
    meta.rate_limit_next(1)  # Graph API's way: HTTP 400 with error code 4
    source = make_source("facebook_pixel", {"pixelId": "123456789012345", "accessToken": "meta-good"})
    run = sync(source, dataclasses.replace(FAST, max_wait=0.05))
    assert run.status == "succeeded" and len(meta.requests) == 2


@pytest.mark.parametrize("token, auth_status", [("meta-old", 400), ("meta-unknown", 401)])
def test_pixel_with_a_bad_token_puts_the_source_in_error(app_ctx, meta, token, auth_status):
    meta.auth_error_status = auth_status
    meta.add_pixel("123456789012345")
    source = make_source("facebook_pixel", {"pixelId": "123456789012345", "accessToken": token})
    run = sync(source)
    assert run.status == "failed" and "access token" in run.error and token not in run.error
    assert db.session.get(DataSource, source.id).status == "error"
    assert len(meta.requests) == 1


def test_gtm_sync_verifies_the_container(app_ctx, google):
    google.add_container("6001234567", "98765432", public_id="GTM-ABC1234", name="Server")
    source = make_source("gtm", GTM_CONFIG | {"accessToken": "gtm-good"},
                         status="error")  # a source that failed before recovers on success
    run = sync(source)
    assert run.status == "succeeded"
    assert run.details["container"]["publicId"] == "GTM-ABC1234"
    assert google.requests[0].header("Authorization") == "Bearer gtm-good"
    assert db.session.get(DataSource, source.id).status == "active"


@pytest.mark.parametrize("token, container, reason", [
    ("gtm-bad", "98765432", "rejected the access token"),
    ("gtm-no-scope", "98765432", "HTTP 403"),
    ("gtm-good", "11111111", "container not found"),
])
def test_gtm_failures_put_the_source_in_error(app_ctx, google, token, container, reason):
    google.add_container("6001234567", "98765432")
    source = make_source("gtm", GTM_CONFIG | {"apiContainerId": container, "accessToken": token})
    run = sync(source)
    assert run.status == "failed" and reason in run.error
    assert db.session.get(DataSource, source.id).status == "error"


def test_retry_after_parses_decimal_seconds_and_dates():
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert http.parse_retry_after("2.0") == 2.0
    assert http.parse_retry_after("Mon, 01 Jan 2024 00:00:03 GMT", now=now) == 3.0
    assert http.parse_retry_after("soon") is None and http.parse_retry_after(None) is None


# -- through a real worker ----------------------------------------------------------------------------
def test_requested_sync_runs_on_a_real_worker(app, monkeypatch, celery_worker):
    # The in-process worker looks tasks up in Celery's default app, which importing `workers` (as
    # the worker does on start) re-points at another Flask app; the session app must serve them here.
    monkeypatch.setattr(celery._state, "default_app", app.extensions["celery"])
    with ShopifyEmulator(valid_tokens={TOKEN}, restore_rate=1000.0) as emulator:
        point(app, monkeypatch, "SHOPIFY_API_BASE_URL", emulator.base_url)
        fill_shop(emulator, customers=120, orders=3, checkouts=2)
        with app.app_context():
            source = shopify_source()
            run_id = source_syncs.request_sync(source.user_id, source.id).id
            run = wait_for_run(run_id)
            assert run.status == "succeeded", run.error
            assert run.events_created == 125
            assert sum(event_counts(source).values()) == 125


def wait_for_run(run_id: uuid.UUID, timeout: float = 30.0) -> SyncRun:
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        run = db.session.get(SyncRun, run_id)
        db.session.rollback()
        if run.status != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.1)
