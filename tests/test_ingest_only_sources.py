"""Pixel and GTM sources that only receive events (no API credentials), and sources whose
credentials fail: in `error` with the reason once, no retry storm across beat ticks, still receiving
events until the merchant changes the credentials."""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import celery._state
import pytest
import sqlalchemy as sa
from flask import Flask

import workers.sources  # noqa: F401  (registers the sources.* tasks on the session app's Celery)
from app import clock
from app.extensions import db
from app.models import DataEvent, SyncRun
from app.services import source_syncs
from app.sources import http
from tests.emulators import GtmEmulator, MetaGraphEmulator
from tests.support.accounts import signed_in
from tests.support.sources import capi_event

SOURCES = "/api/v1/data-sources"
PIXEL_ID, OTHER_PIXEL_ID = "123456789012345", "543210987654321"
FAST = http.RetryPolicy(base_delay=0.01, max_delay=0.05, max_wait=2.0, read_timeout=5.0)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "DEFAULT_POLICY", FAST)


def point(app: Flask, monkeypatch: pytest.MonkeyPatch, **urls: str) -> None:
    settings = app.config["HERALD_SETTINGS"]
    monkeypatch.setitem(app.config, "HERALD_SETTINGS",
                        dataclasses.replace(settings, api_base_urls={**settings.api_base_urls, **urls}))


@pytest.fixture()
def meta(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetaGraphEmulator]:
    with MetaGraphEmulator(valid_tokens={"meta-good"}, expired_tokens={"meta-old"}) as emulator:
        emulator.add_pixel(PIXEL_ID, name="Shop pixel")
        emulator.add_pixel(OTHER_PIXEL_ID, name="Other pixel")
        point(app, monkeypatch, META_GRAPH_API_BASE_URL=emulator.base_url)
        yield emulator
        assert emulator.server_errors == []


def create(client, headers, source_type: str, config: dict) -> dict:
    response = client.post(SOURCES, headers=headers, json={"sourceType": source_type, "name": source_type,
                                                            "config": config})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def runs(source_id: str) -> list[SyncRun]:
    db.session.expire_all()
    return db.session.scalars(sa.select(SyncRun).where(SyncRun.data_source_id == uuid.UUID(source_id))
                              .order_by(SyncRun.started_at)).all()


def events(source_id: str) -> list[str]:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataEvent.event_type).where(DataEvent.data_source_id == uuid.UUID(source_id))
                              .order_by(DataEvent.event_type)).all()


# -- ingest only ------------------------------------------------------------------------------------
def test_a_pixel_with_only_its_id_receives_events(client, app_ctx):
    _, headers = signed_in(client)
    created = create(client, headers, "facebook_pixel", {"pixelId": PIXEL_ID})
    assert created["config"] == {"pixelId": PIXEL_ID, "apiVersion": "v21.0"} and created["status"] == "active"

    response = client.post(f"/ingest/facebook-pixel/{created['id']}", json={"data": [capi_event("Purchase", "o-1")]},
                           headers={"X-Ingest-Key": created["ingestKey"]})

    assert response.status_code == 202
    assert {k: response.get_json()[k] for k in ("accepted", "duplicates", "events_received")} == {
        "accepted": 1, "duplicates": 0, "events_received": 1}
    assert events(created["id"]) == ["Purchase"]
    sync = client.post(f"{SOURCES}/{created['id']}/sync", headers=headers)
    assert sync.status_code == 409 and "only receives events" in sync.get_json()["message"]
    assert source_syncs.schedule_all() == 0 and runs(created["id"]) == []


def test_a_gtm_container_with_only_its_id_receives_events(client, app_ctx):
    _, headers = signed_in(client)
    created = create(client, headers, "gtm", {"containerId": "GTM-ABC1234"})
    assert created["config"] == {"containerId": "GTM-ABC1234"}

    batch = {"client_id": "555.123", "events": [{"name": "page_view", "params": {"page_location": "https://s/x"}}]}
    response = client.post(f"/ingest/gtm/{created['id']}", json=batch, headers={"X-Ingest-Key": created["ingestKey"]})

    assert response.status_code == 202 and response.get_json() == {"accepted": 1, "duplicates": 0}
    assert events(created["id"]) == ["page_view"]
    assert client.post(f"{SOURCES}/{created['id']}/sync", headers=headers).status_code == 409
    assert source_syncs.schedule_all() == 0


@pytest.mark.parametrize("source_type, config, fields", [
    ("gtm", {}, {"containerId"}),
    ("gtm", {"containerId": "42"}, {"containerId"}),  # the API's numeric id is not the container id
    ("gtm", {"containerId": "GTM-"}, {"containerId"}),
    ("gtm", {"containerId": "GTM-ABC1234", "accessToken": "ya29.t"}, {"accountId", "apiContainerId"}),
    ("gtm", {"containerId": "GTM-ABC1234", "accessToken": "ya29.t", "accountId": "6001"}, {"apiContainerId"}),
    ("gtm", {"containerId": "GTM-ABC1234", "apiContainerId": "GTM-ABC1234"}, {"apiContainerId"}),
    ("facebook_pixel", {}, {"pixelId"}),
    ("facebook_pixel", {"pixelId": PIXEL_ID, "accessToken": ""}, {"accessToken"}),
])
def test_ingest_only_configs_are_validated(client, app_ctx, source_type, config, fields):
    _, headers = signed_in(client)
    response = client.post(SOURCES, headers=headers, json={"sourceType": source_type, "name": "x", "config": config})
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["config"]) == fields
    assert client.get(SOURCES, headers=headers).get_json() == []


def test_gtm_with_credentials_checks_its_container_by_the_api_ids(client, app_ctx, app, monkeypatch):
    with GtmEmulator(valid_tokens={"gtm-good"}) as google:
        point(app, monkeypatch, GTM_API_BASE_URL=google.base_url)
        google.add_container("6001234567", "98765432", public_id="GTM-ABC1234")
        google.add_container("6001234567", "11112222", public_id="GTM-ZZZ9999")
        _, headers = signed_in(client)
        good = create(client, headers, "gtm", {"containerId": "GTM-ABC1234", "accessToken": "gtm-good",
                                               "accountId": "6001234567", "apiContainerId": "98765432"})
        crossed = create(client, headers, "gtm", {"containerId": "GTM-ABC1234", "accessToken": "gtm-good",
                                                  "accountId": "6001234567", "apiContainerId": "11112222"})
        for source in (good, crossed):
            run = client.post(f"{SOURCES}/{source['id']}/sync", headers=headers)
            assert run.status_code == 202
            source_syncs.run_sync(uuid.UUID(run.get_json()["id"]), policy=FAST)
        assert google.requests[0].path == "/tagmanager/v2/accounts/6001234567/containers/98765432"
        assert [r.status for r in runs(good["id"])] == ["succeeded"]
        (failed,) = runs(crossed["id"])
        assert failed.status == "failed" and "is GTM-ZZZ9999, not GTM-ABC1234" in failed.error
        assert client.get(f"{SOURCES}/{crossed['id']}", headers=headers).get_json()["status"] == "error"


def test_credentials_added_later_are_checked_at_once(client, app_ctx, meta):
    _, headers = signed_in(client)
    created = create(client, headers, "facebook_pixel", {"pixelId": PIXEL_ID})
    patched = client.patch(f"{SOURCES}/{created['id']}", headers=headers, json={"config": {"accessToken": "meta-good"}})
    assert patched.status_code == 200
    (run,) = runs(created["id"])
    assert (run.trigger, run.status) == ("config", "running")
    source_syncs.run_sync(run.id, policy=FAST)
    assert [(r.status, r.details) for r in runs(created["id"])] == [
        ("succeeded", {"pixel": {"id": PIXEL_ID, "name": "Shop pixel"}})]


# -- failing credentials across beat ticks, with a real worker -----------------------------------------
def test_failing_credentials_error_once_no_storm_and_events_still_arrive(app, live_client, celery_worker, meta,
                                                                         monkeypatch):
    monkeypatch.setattr(celery._state, "default_app", app.extensions["celery"])
    _, headers = signed_in(live_client)
    create(live_client, headers, "facebook_pixel", {"pixelId": OTHER_PIXEL_ID, "accessToken": "meta-good"})
    failing = create(live_client, headers, "facebook_pixel", {"pixelId": PIXEL_ID, "accessToken": "meta-old"})

    def checks(pixel_id: str) -> int:
        return len([r for r in meta.requests if r.path.endswith(f"/{pixel_id}")])

    with app.app_context():
        for _ in range(4):  # beat ticks a few hours apart: due sources are checked again each time
            beat_tick()
            assert source_syncs.schedule_all() == 0  # and not again within the hour
            clock.advance(timedelta(hours=2))
        assert checks(OTHER_PIXEL_ID) == 4
        assert checks(PIXEL_ID) == 1  # refused once, then left alone
        assert [(r.trigger, r.status) for r in runs(failing["id"])] == [("schedule", "failed")]
        db.session.remove()

    shown = live_client.get(f"{SOURCES}/{failing['id']}", headers=headers).get_json()
    assert shown["status"] == "error" and "access token" in shown["lastError"] and "meta-old" not in shown["lastError"]
    arrived = live_client.post(f"/ingest/facebook-pixel/{failing['id']}", json={"data": [capi_event("Lead", "l-1")]},
                               headers={"X-Ingest-Key": failing["ingestKey"]})
    assert arrived.status_code == 202

    fixed = live_client.patch(f"{SOURCES}/{failing['id']}", headers=headers, json={"config": {"accessToken": "meta-good"}})
    assert fixed.get_json()["status"] == "active"
    with app.app_context():
        wait_idle()
        assert checks(PIXEL_ID) == 2
        assert [(r.trigger, r.status) for r in runs(failing["id"])][-1] == ("config", "succeeded")
        clock.advance(timedelta(hours=2))
        beat_tick()
        assert checks(PIXEL_ID) == 3  # checked on schedule again
        db.session.remove()


def beat_tick() -> None:
    """What beat's sources.sync_all does, then wait for the worker to finish the runs it started."""
    source_syncs.schedule_all()
    wait_idle()


def wait_idle(timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        running = db.session.scalar(sa.select(sa.func.count()).select_from(SyncRun).where(SyncRun.status == "running"))
        db.session.rollback()
        if running == 0:
            return True
        assert time.monotonic() < deadline, "sync runs still running"
        time.sleep(0.1)
