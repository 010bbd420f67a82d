"""Data sources through HTTP: CRUD per type, config validation, secrets at rest, ingest keys,
tenant isolation, sync history and events."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import DataEvent, DataSource, EventFailure, IngestKey, SyncRun
from app.security import opaque_tokens, secret_box
from app.services.data_sources import decrypted_config
from tests.support.accounts import signed_in

SOURCES = "/api/v1/data-sources"
MASK = "********"
T0 = datetime(2025, 1, 1, 12, 0, 0)

CONFIGS = {
    "shopify": {"shopDomain": "Acme-Store.myshopify.com", "accessToken": "shpat_secret", "webhookSecret": "whsec"},
    "facebook_pixel": {"pixelId": "123456789", "accessToken": "EAAB-secret"},
    "gtm": {"containerId": "GTM-ABC1234", "accountId": "6001", "apiContainerId": "7002", "accessToken": "ya29.secret",
            "measurementId": "G-ABC123"},
}
SECRETS = {
    "shopify": {"accessToken": "shpat_secret", "webhookSecret": "whsec"},
    "facebook_pixel": {"accessToken": "EAAB-secret"},
    "gtm": {"accessToken": "ya29.secret"},
}


def _create(client, headers, source_type: str = "facebook_pixel", **overrides) -> dict:
    body = {"sourceType": source_type, "name": f"My {source_type}", "config": dict(CONFIGS[source_type])} | overrides
    response = client.post(SOURCES, headers=headers, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _row(source_id: str) -> DataSource:
    db.session.expire_all()
    return db.session.get(DataSource, uuid.UUID(source_id))


def _assert_redacted(body: dict, source_type: str) -> None:
    for name in SECRETS[source_type]:
        assert body["config"][name] == MASK
    assert not any(secret in json.dumps(body) for secret in SECRETS[source_type].values())


def _add(*rows) -> None:
    db.session.add_all(rows)
    db.session.commit()


@pytest.mark.parametrize("source_type", list(CONFIGS))
def test_create_get_list_each_type(client, app_ctx, source_type):
    _, headers = signed_in(client)
    created = _create(client, headers, source_type)
    assert created["sourceType"] == source_type and created["status"] == "active"
    assert created["lastSyncAt"] is None and created["lastError"] is None
    assert created["createdAt"].endswith("+00:00")
    _assert_redacted(created, source_type)
    assert ("ingestKey" in created) == (source_type != "shopify")
    assert created["hasIngestKey"] == (source_type != "shopify")

    fetched = client.get(f"{SOURCES}/{created['id']}", headers=headers).get_json()
    assert fetched == {k: v for k, v in created.items() if k != "ingestKey"}
    listed = client.get(SOURCES, headers=headers).get_json()
    assert listed == [fetched]


def test_config_defaults_and_normalization(client, app_ctx):
    _, headers = signed_in(client)
    shop = _create(client, headers, "shopify")["config"]
    assert shop == {"shopDomain": "acme-store.myshopify.com", "accessToken": MASK, "webhookSecret": MASK,
                    "apiVersion": "2025-10", "backfillDays": 90}
    pixel = _create(client, headers, "facebook_pixel")["config"]
    assert pixel["apiVersion"] == "v21.0"
    gtm = _create(client, headers, "gtm", config={"containerId": "gtm-k9x2abc"})
    assert gtm["config"] == {"containerId": "GTM-K9X2ABC"}


@pytest.mark.parametrize("source_type", list(CONFIGS))
def test_secrets_are_encrypted_at_rest(client, app_ctx, source_type):
    _, headers = signed_in(client)
    created = _create(client, headers, source_type)
    row = _row(created["id"])
    for name, plain in SECRETS[source_type].items():
        assert row.config[name].startswith("enc:v1:") and plain not in row.config[name]
        assert secret_box.decrypt(row.config[name]) == plain
    assert {k: v for k, v in decrypted_config(row).items() if k in SECRETS[source_type]} == SECRETS[source_type]


@pytest.mark.parametrize(
    "source_type, config, path",
    [
        ("shopify", {"shopDomain": "acme.example.com"}, "shopDomain"),
        ("shopify", {"shopDomain": "-acme.myshopify.com"}, "shopDomain"),
        ("shopify", {"accessToken": ""}, "accessToken"),
        ("shopify", {"webhookSecret": None}, "webhookSecret"),
        ("shopify", {"accessToken": MASK}, "accessToken"),
        ("shopify", {"apiVersion": "2025-11"}, "apiVersion"),
        ("shopify", {"backfillDays": 0}, "backfillDays"),
        ("shopify", {"backfillDays": "90"}, "backfillDays"),
        ("shopify", {"backfillDays": 3651}, "backfillDays"),
        ("shopify", {"extra": "x"}, "extra"),
        ("facebook_pixel", {"pixelId": "12ab5"}, "pixelId"),
        ("facebook_pixel", {"pixelId": "1234"}, "pixelId"),
        ("facebook_pixel", {"pixelId": 123456}, "pixelId"),
        ("facebook_pixel", {"apiVersion": "21.0"}, "apiVersion"),
        ("gtm", {"containerId": "GTM-ABC"}, "containerId"),
        ("gtm", {"measurementId": "UA-1234"}, "measurementId"),
        ("gtm", {"webhookSecret": "x"}, "webhookSecret"),
    ],
)
def test_invalid_config_is_rejected_with_its_path(client, app_ctx, source_type, config, path):
    _, headers = signed_in(client)
    body = {"sourceType": source_type, "name": "bad", "config": CONFIGS[source_type] | config}
    response = client.post(SOURCES, headers=headers, json=body)
    assert response.status_code == 422
    assert path in response.get_json()["errors"]["config"]
    assert client.get(SOURCES, headers=headers).get_json() == []


def test_missing_required_config_fields_are_named(client, app_ctx):
    _, headers = signed_in(client)
    response = client.post(SOURCES, headers=headers, json={"sourceType": "shopify", "name": "x", "config": {}})
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["config"]) == {"shopDomain", "accessToken", "webhookSecret"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"sourceType": "woocommerce"}, "sourceType"),
        ({"sourceType": None}, "sourceType"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"config": ["not", "an", "object"]}, "config"),
        ({"config": "x"}, "config"),
        ({"status": "inactive"}, "status"),
    ],
)
def test_invalid_body_is_rejected(client, app_ctx, body, field):
    _, headers = signed_in(client)
    payload = {"sourceType": "gtm", "name": "ok", "config": CONFIGS["gtm"]} | body
    response = client.post(SOURCES, headers=headers, json=payload)
    assert response.status_code == 422 and field in response.get_json()["errors"]
    assert client.get(SOURCES, headers=headers).get_json() == []


def test_malformed_and_missing_bodies(client, app_ctx):
    _, headers = signed_in(client)
    malformed = client.post(SOURCES, headers=headers, data=b"{nope", content_type="application/json")
    assert malformed.status_code == 400 and malformed.get_json()["code"] == "bad_request"
    assert client.post(SOURCES, headers=headers, json=[]).status_code == 422
    assert client.post(SOURCES, headers=headers).status_code == 422
    assert client.get(SOURCES, headers=headers).get_json() == []


def test_patch_renames_and_toggles_status(client, app_ctx):
    _, headers = signed_in(client)
    created = _create(client, headers, "gtm")
    url = f"{SOURCES}/{created['id']}"
    patched = client.patch(url, headers=headers, json={"name": "Server container", "status": "inactive"})
    assert patched.status_code == 200
    body = patched.get_json()
    assert body["name"] == "Server container" and body["status"] == "inactive" and "ingestKey" not in body
    _assert_redacted(body, "gtm")
    assert client.get(url, headers=headers).get_json() == body
    assert client.patch(url, headers=headers, json={"status": "active"}).get_json()["status"] == "active"


def test_patch_config_merges_and_keeps_secrets(client, app_ctx):
    _, headers = signed_in(client)
    created = _create(client, headers, "shopify")
    url = f"{SOURCES}/{created['id']}"
    omitted = client.patch(url, headers=headers, json={"config": {"backfillDays": 30}})
    assert omitted.status_code == 200
    assert omitted.get_json()["config"]["backfillDays"] == 30
    assert omitted.get_json()["config"]["shopDomain"] == "acme-store.myshopify.com"
    _assert_redacted(omitted.get_json(), "shopify")

    # A client that sends back what GET showed it changes nothing secret.
    masked = client.patch(url, headers=headers, json={"config": omitted.get_json()["config"] | {"apiVersion": "2025-07"}})
    assert masked.status_code == 200 and masked.get_json()["config"]["apiVersion"] == "2025-07"
    assert {k: v for k, v in decrypted_config(_row(created["id"])).items() if k in SECRETS["shopify"]} == \
        SECRETS["shopify"]

    replaced = client.patch(url, headers=headers, json={"config": {"accessToken": "shpat_new", "webhookSecret": MASK}})
    _assert_redacted(replaced.get_json(), "shopify")
    row = _row(created["id"])
    assert row.config["accessToken"].startswith("enc:v1:")
    assert decrypted_config(row)["accessToken"] == "shpat_new" and decrypted_config(row)["webhookSecret"] == "whsec"


def test_patch_can_clear_an_optional_field(client, app_ctx):
    _, headers = signed_in(client)
    created = _create(client, headers, "gtm")
    patched = client.patch(f"{SOURCES}/{created['id']}", headers=headers, json={"config": {"measurementId": None}})
    assert patched.status_code == 200 and "measurementId" not in patched.get_json()["config"]


@pytest.mark.parametrize(
    "payload, path",
    [
        ({"sourceType": "gtm"}, ["sourceType"]),
        ({"status": "error"}, ["status"]),
        ({"status": "paused"}, ["status"]),
        ({"name": ""}, ["name"]),
        ({"config": None}, ["config"]),
        ({"config": {"shopDomain": "shop.example.com"}}, ["config", "shopDomain"]),
        ({"config": {"shopDomain": None}}, ["config", "shopDomain"]),
        ({"config": {"accessToken": ""}}, ["config", "accessToken"]),
        ({"config": {"pixelId": "1"}}, ["config", "pixelId"]),
        ({"id": str(uuid.uuid4())}, ["id"]),
    ],
)
def test_bad_patches_change_nothing(client, app_ctx, payload, path):
    _, headers = signed_in(client)
    created = _create(client, headers, "shopify")
    url = f"{SOURCES}/{created['id']}"
    stored = dict(_row(created["id"]).config)
    response = client.patch(url, headers=headers, json=payload | {"name": payload.get("name", "renamed")})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    for key in path:
        errors = errors[key]
    assert client.get(url, headers=headers).get_json() == {k: v for k, v in created.items() if k != "ingestKey"}
    assert _row(created["id"]).config == stored


def test_patch_accepts_an_unchanged_source_type(client, app_ctx):
    _, headers = signed_in(client)
    created = _create(client, headers, "gtm")
    response = client.patch(f"{SOURCES}/{created['id']}", headers=headers, json={"sourceType": "gtm", "name": "n"})
    assert response.status_code == 200 and response.get_json()["name"] == "n"


def test_another_users_source_is_not_found_everywhere(client, app_ctx):
    _, owner = signed_in(client)
    _, stranger = signed_in(client)
    source = _create(client, owner, "gtm")
    for source_id in (source["id"], str(uuid.uuid4())):
        url = f"{SOURCES}/{source_id}"
        assert client.get(url, headers=stranger).status_code == 404
        assert client.patch(url, headers=stranger, json={"name": "mine now"}).status_code == 404
        assert client.delete(url, headers=stranger).status_code == 404
        assert client.post(f"{url}/ingest-key", headers=stranger).status_code == 404
        assert client.get(f"{url}/syncs", headers=stranger).status_code == 404
        assert client.get(f"{url}/events", headers=stranger).status_code == 404
    assert client.get(SOURCES, headers=stranger).get_json() == []
    assert client.get(f"{SOURCES}/not-a-uuid", headers=owner).status_code == 404
    assert client.get(f"{SOURCES}/{source['id']}", headers=owner).get_json()["name"] == source["name"]


def test_routes_need_a_token(client, app_ctx):
    _, headers = signed_in(client)
    source = _create(client, headers, "gtm")
    assert client.get(SOURCES).status_code == 401
    assert client.post(SOURCES, json={"sourceType": "gtm", "name": "x", "config": CONFIGS["gtm"]}).status_code == 401
    assert client.get(f"{SOURCES}/{source['id']}").status_code == 401
    assert client.post(f"{SOURCES}/{source['id']}/ingest-key").status_code == 401


@pytest.mark.parametrize("source_type", ["facebook_pixel", "gtm"])
def test_ingest_key_is_shown_once_and_rotates(client, app_ctx, source_type):
    _, headers = signed_in(client)
    created = _create(client, headers, source_type)
    first = created["ingestKey"]
    assert first.startswith("hik_") and len(first) > 40
    source_id = uuid.UUID(created["id"])
    stored = db.session.get(IngestKey, source_id)
    assert stored.key_hash != first and opaque_tokens.secret_matches(first, stored.key_hash)

    response = client.post(f"{SOURCES}/{created['id']}/ingest-key", headers=headers)
    assert response.status_code == 200 and set(response.get_json()) == {"ingestKey"}
    second = response.get_json()["ingestKey"]
    assert second.startswith("hik_") and second != first
    db.session.expire_all()
    rows = db.session.scalars(sa.select(IngestKey).where(IngestKey.data_source_id == source_id)).all()
    assert len(rows) == 1
    assert opaque_tokens.secret_matches(second, rows[0].key_hash)
    assert not opaque_tokens.secret_matches(first, rows[0].key_hash)
    shown = client.get(f"{SOURCES}/{created['id']}", headers=headers).get_json()
    assert "ingestKey" not in shown and shown["hasIngestKey"] is True
    assert all("ingestKey" not in item for item in client.get(SOURCES, headers=headers).get_json())


def test_shopify_sources_have_no_ingest_key(client, app_ctx):
    _, headers = signed_in(client)
    created = _create(client, headers, "shopify")
    response = client.post(f"{SOURCES}/{created['id']}/ingest-key", headers=headers)
    assert response.status_code == 409 and response.get_json()["code"] == "conflict"
    assert db.session.get(IngestKey, uuid.UUID(created["id"])) is None


def _sync_run(source_id: str, minutes: int, status: str, error: str | None = None, **extra) -> SyncRun:
    started = T0 + timedelta(minutes=minutes)
    return SyncRun(data_source_id=uuid.UUID(source_id), trigger="schedule", status=status, started_at=started,
                   lease_expires_at=started + timedelta(minutes=10), error=error, **extra)


def test_last_error_shows_the_latest_failed_sync_while_in_error(client, app_ctx):
    _, headers = signed_in(client)
    source = _create(client, headers, "shopify")
    healthy = _create(client, headers, "gtm")
    _add(
        _sync_run(source["id"], 0, "failed", "old failure"),
        _sync_run(source["id"], 10, "failed", "401 Unauthorized: invalid API key"),
        _sync_run(source["id"], 20, "succeeded"),
        _sync_run(healthy["id"], 0, "failed", "timeout"),
    )
    assert client.get(f"{SOURCES}/{source['id']}", headers=headers).get_json()["lastError"] is None
    db.session.execute(sa.update(DataSource).where(DataSource.id == uuid.UUID(source["id"])).values(status="error"))
    db.session.commit()

    shown = client.get(f"{SOURCES}/{source['id']}", headers=headers).get_json()
    assert shown["status"] == "error" and shown["lastError"] == "401 Unauthorized: invalid API key"
    listed = {item["id"]: item["lastError"] for item in client.get(SOURCES, headers=headers).get_json()}
    assert listed == {source["id"]: "401 Unauthorized: invalid API key", healthy["id"]: None}
    errored = client.get(SOURCES, headers=headers, query_string={"status": "error"}).get_json()
    assert [item["id"] for item in errored] == [source["id"]]


def test_list_is_newest_first_filtered_and_paginated(client, app_ctx):
    _, headers = signed_in(client)
    created = [_create(client, headers, kind) for kind in ("shopify", "gtm", "facebook_pixel", "gtm")]
    for age, source in enumerate(reversed(created)):
        db.session.execute(sa.update(DataSource).where(DataSource.id == uuid.UUID(source["id"]))
                           .values(created_at=T0 - timedelta(days=age)))
    db.session.commit()
    newest_first = [source["id"] for source in reversed(created)]

    page = client.get(SOURCES, headers=headers, query_string={"page": 1, "page_size": 3})
    assert [item["id"] for item in page.get_json()] == newest_first[:3]
    paging = json.loads(page.headers["X-Pagination"])
    assert paging["total"] == 4 and paging["total_pages"] == 2 and paging["next_page"] == 2
    second = client.get(SOURCES, headers=headers, query_string={"page": 2, "page_size": 3}).get_json()
    assert [item["id"] for item in second] == newest_first[3:]

    gtm = client.get(SOURCES, headers=headers, query_string={"sourceType": "gtm"}).get_json()
    assert [item["id"] for item in gtm] == [created[3]["id"], created[1]["id"]]
    for bad in ({"sourceType": "woo"}, {"status": "broken"}, {"page_size": 0}):
        response = client.get(SOURCES, headers=headers, query_string=bad)
        assert response.status_code == 422 and response.get_json()["errors"]


def test_list_queries_do_not_grow_with_the_page(client, app_ctx):
    _, headers = signed_in(client)
    _create(client, headers, "gtm")

    def statements_for_list() -> int:
        seen: list[str] = []
        listener = lambda conn, cursor, statement, *args: seen.append(statement)  # noqa: E731
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", listener)
        try:
            assert client.get(SOURCES, headers=headers).status_code == 200
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", listener)
        return len(seen)

    one = statements_for_list()
    for kind in ("shopify", "facebook_pixel", "gtm", "shopify"):
        _create(client, headers, kind)
    assert statements_for_list() == one


def test_sync_history_newest_first(client, app_ctx):
    _, headers = signed_in(client)
    source = _create(client, headers, "shopify")
    other = _create(client, headers, "shopify")
    _add(
        _sync_run(source["id"], 0, "succeeded", events_created=12, finished_at=T0 + timedelta(minutes=3)),
        _sync_run(source["id"], 60, "failed", "rate limited", finished_at=T0 + timedelta(minutes=61)),
        _sync_run(source["id"], 120, "running"),
        _sync_run(other["id"], 30, "succeeded"),
    )
    response = client.get(f"{SOURCES}/{source['id']}/syncs", headers=headers, query_string={"page_size": 2})
    assert response.status_code == 200
    assert json.loads(response.headers["X-Pagination"])["total"] == 3
    latest, failed = response.get_json()
    assert set(latest) == {"id", "trigger", "status", "startedAt", "finishedAt", "eventsCreated", "error"}
    assert latest["status"] == "running" and latest["finishedAt"] is None
    assert failed == failed | {"status": "failed", "error": "rate limited", "trigger": "schedule",
                               "startedAt": "2025-01-01T13:00:00+00:00", "finishedAt": "2025-01-01T13:01:00+00:00"}
    oldest = client.get(f"{SOURCES}/{source['id']}/syncs", headers=headers,
                        query_string={"page": 2, "page_size": 2}).get_json()
    assert [(run["status"], run["eventsCreated"], run["error"]) for run in oldest] == [("succeeded", 12, None)]


def _event(source_id: str, minutes: int, event_type: str = "orders/create", processed: bool = False) -> DataEvent:
    created = T0 + timedelta(minutes=minutes)
    return DataEvent(id=uuid.uuid4(), data_source_id=uuid.UUID(source_id), event_type=event_type,
                     event_data={"id": minutes}, created_at=created, processed_at=created if processed else None)


def test_events_with_their_processing_status(client, app_ctx):
    _, headers = signed_in(client)
    source = _create(client, headers, "shopify")
    other = _create(client, headers, "shopify")
    pending, processed, retrying, quarantined = (
        _event(source["id"], 0), _event(source["id"], 1, "customers/create", processed=True),
        _event(source["id"], 2), _event(source["id"], 3, "customers/create"),
    )
    _add(pending, processed, retrying, quarantined, _event(other["id"], 4))
    _add(
        EventFailure(data_event_id=retrying.id, attempts=1, last_error="deadlock detected"),
        EventFailure(data_event_id=quarantined.id, attempts=5, last_error="KeyError: 'customer'",
                     quarantined_at=T0 + timedelta(hours=1)),
    )
    url = f"{SOURCES}/{source['id']}/events"

    response = client.get(url, headers=headers)
    assert response.status_code == 200 and json.loads(response.headers["X-Pagination"])["total"] == 4
    shown = [(e["id"], e["status"], e["error"]) for e in response.get_json()]
    assert shown == [
        (str(quarantined.id), "quarantined", "KeyError: 'customer'"),
        (str(retrying.id), "pending", "deadlock detected"),
        (str(processed.id), "processed", None),
        (str(pending.id), "pending", None),
    ]
    first = response.get_json()[0]
    assert first == {"id": str(quarantined.id), "eventType": "customers/create", "eventData": {"id": 3},
                     "processedAt": None, "createdAt": "2025-01-01T12:03:00+00:00", "status": "quarantined",
                     "error": "KeyError: 'customer'"}

    def ids(**query) -> list[str]:
        return [e["id"] for e in client.get(url, headers=headers, query_string=query).get_json()]

    assert ids(status="pending") == [str(retrying.id), str(pending.id)]
    assert ids(status="processed") == [str(processed.id)]
    assert ids(status="quarantined") == [str(quarantined.id)]
    assert ids(eventType="customers/create") == [str(quarantined.id), str(processed.id)]
    assert ids(eventType="customers/create", status="processed") == [str(processed.id)]
    assert client.get(url, headers=headers, query_string={"status": "failed"}).status_code == 422


def test_delete_cascades_to_events_and_history(client, app_ctx):
    _, headers = signed_in(client)
    source = _create(client, headers, "facebook_pixel")
    kept = _create(client, headers, "facebook_pixel")
    event = _event(source["id"], 0)
    _add(event, _event(kept["id"], 0), _sync_run(source["id"], 0, "succeeded"))
    _add(EventFailure(data_event_id=event.id, last_error="boom"))
    event_id = event.id

    url = f"{SOURCES}/{source['id']}"
    response = client.delete(url, headers=headers)
    assert response.status_code == 204 and response.data == b""
    assert client.get(url, headers=headers).status_code == 404
    assert client.delete(url, headers=headers).status_code == 404
    source_id = uuid.UUID(source["id"])
    db.session.expire_all()
    for model, column in ((DataEvent, DataEvent.data_source_id), (SyncRun, SyncRun.data_source_id),
                          (IngestKey, IngestKey.data_source_id)):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model).where(column == source_id)) == 0
    assert db.session.get(EventFailure, event_id) is None
    assert [item["id"] for item in client.get(SOURCES, headers=headers).get_json()] == [kept["id"]]
    assert client.get(f"{SOURCES}/{kept['id']}/events", headers=headers).get_json() != []

