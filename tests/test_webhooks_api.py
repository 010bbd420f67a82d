"""The webhook endpoints API: register (the signing secret shown once), list, change, disable and
enable, delete; bad input is a 422 naming the field, with nothing written; one merchant never sees
another's endpoints; API keys need the `webhooks:write` scope to change them."""
from __future__ import annotations

import ipaddress

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import WebhookEndpoint
from app.security.secret_box import ENCRYPTED_PREFIX
from app.services import webhooks
from app.webhooks.urls import url_problem
from tests.support.accounts import signed_in
from tests.test_api_keys import create_key

ENDPOINTS = "/api/v1/webhook-endpoints"
URL = "https://hooks.merchant.example/herald"


def _create(client, headers, **body):
    return client.post(ENDPOINTS, json={"url": URL, "eventTypes": ["message.sent"], **body}, headers=headers)


def _count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint))


def test_register_list_change_and_delete(client):
    _, headers = signed_in(client)
    created = _create(client, headers, eventTypes=["campaign.completed", "message.sent", "message.sent"],
                      description="Warehouse")
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    # In catalogue order, once each; enabled; no failures yet.
    assert body["eventTypes"] == ["message.sent", "campaign.completed"]
    assert (body["enabled"], body["disabledAt"], body["failingSince"], body["consecutiveFailures"]) == (True, None, None, 0)
    stored = db.session.get(WebhookEndpoint, body["id"])
    assert stored.secret.startswith(ENCRYPTED_PREFIX) and body["secret"] not in stored.secret

    listed = client.get(ENDPOINTS, headers=headers)
    assert listed.status_code == 200 and [e["id"] for e in listed.get_json()] == [body["id"]]
    assert "secret" not in listed.get_json()[0] and "X-Pagination" in listed.headers
    one = client.get(f"{ENDPOINTS}/{body['id']}", headers=headers).get_json()
    assert "secret" not in one and one["url"] == URL

    changed = client.patch(f"{ENDPOINTS}/{body['id']}", headers=headers,
                           json={"url": URL + "/v2", "eventTypes": ["message.opened"], "description": None})
    assert changed.status_code == 200
    assert (changed.get_json()["url"], changed.get_json()["eventTypes"], changed.get_json()["description"]) == (
        URL + "/v2", ["message.opened"], None)

    disabled = client.patch(f"{ENDPOINTS}/{body['id']}", headers=headers, json={"enabled": False}).get_json()
    assert disabled["enabled"] is False and disabled["disabledReason"] == "Disabled by the merchant."
    enabled = client.patch(f"{ENDPOINTS}/{body['id']}", headers=headers, json={"enabled": True}).get_json()
    assert (enabled["enabled"], enabled["disabledAt"], enabled["disabledReason"]) == (True, None, None)

    assert client.delete(f"{ENDPOINTS}/{body['id']}", headers=headers).status_code == 204
    assert client.get(f"{ENDPOINTS}/{body['id']}", headers=headers).status_code == 404
    assert client.get(f"{ENDPOINTS}/{body['id']}/deliveries", headers=headers).status_code == 404


@pytest.mark.parametrize(("body", "path"), [
    ({"eventTypes": ["message.sent", "message.exploded"]}, ["eventTypes", "1"]),
    ({"eventTypes": []}, ["eventTypes"]),
    ({"eventTypes": "message.sent"}, ["eventTypes"]),
    ({"url": "http://hooks.merchant.example/herald"}, ["url"]),  # not https
    ({"url": "https://10.1.2.3/herald"}, ["url"]),  # a private address
    ({"url": "https://[::1]:8443/herald"}, ["url"]),
    ({"url": "https://169.254.169.254/latest/meta-data"}, ["url"]),
    ({"url": "https://metadata.internal/x"}, ["url"]),
    ({"url": "https://localhost/herald"}, ["url"]),
    ({"url": "https://user:pass@hooks.merchant.example/"}, ["url"]),
    ({"url": "ftp://hooks.merchant.example/"}, ["url"]),
    ({"url": "https://hooks.merchant.example:99999/"}, ["url"]),
    ({"url": "https://hooks.merchant.example/" + "a" * 2000}, ["url"]),
    ({"url": "https://hooks.merchant.example/\x00"}, ["url"]),
    ({"url": None}, ["url"]),
    ({"description": "x" * 501}, ["description"]),
    ({"secret": "whsec_mine"}, ["secret"]),  # Herald makes the secret
])
def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(client, body, path):
    _, headers = signed_in(client)
    response = _create(client, headers, **body)
    assert response.status_code == 422, response.get_json()
    errors = response.get_json()["errors"]
    for part in path:
        errors = errors[part]
    assert errors
    assert _count() == 0


def test_bad_changes_are_422_and_change_nothing(client):
    _, headers = signed_in(client)
    endpoint = _create(client, headers).get_json()
    for body, field in (({"enabled": "yes"}, "enabled"), ({"url": "http://example.com/"}, "url"),
                        ({"eventTypes": ["nope"]}, "eventTypes"), ({"id": endpoint["id"]}, "id")):
        response = client.patch(f"{ENDPOINTS}/{endpoint['id']}", headers=headers, json=body)
        assert response.status_code == 422 and field in response.get_json()["errors"], body
    current = client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=headers).get_json()
    assert (current["url"], current["eventTypes"], current["enabled"]) == (URL, ["message.sent"], True)
    bad_status = client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries?status=lost", headers=headers)
    assert bad_status.status_code == 422 and "status" in bad_status.get_json()["errors"]


def test_another_merchants_endpoints_answer_like_missing_ones(client):
    _, mine = signed_in(client)
    _, theirs = signed_in(client)
    endpoint = _create(client, theirs).get_json()
    assert client.get(ENDPOINTS, headers=mine).get_json() == []
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"{ENDPOINTS}/{endpoint['id']}", headers=mine, json={})
        assert response.status_code == 404, method
    assert client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=mine).status_code == 404
    assert client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=theirs).get_json()["enabled"] is True


def test_a_merchant_has_at_most_so_many_endpoints(client, monkeypatch):
    monkeypatch.setattr(webhooks, "MAX_ENDPOINTS", 2)
    _, headers = signed_in(client)
    assert [_create(client, headers).status_code for _ in range(3)] == [201, 201, 409]
    assert _count() == 2


def test_api_keys_need_the_webhooks_scope_to_change_endpoints(client):
    _, headers = signed_in(client)
    reader = {"Authorization": f"Bearer {create_key(client, headers, ['read'])['key']}"}
    writer = {"Authorization": f"Bearer {create_key(client, headers, ['webhooks:write'])['key']}"}
    refused = _create(client, reader)
    assert refused.status_code == 403 and refused.get_json()["code"] == "insufficient_scope"
    created = _create(client, writer)
    assert created.status_code == 201
    assert client.get(ENDPOINTS, headers=reader).status_code == 200


def test_urls_receivers_may_use():
    assert url_problem("https://hooks.merchant.example/herald?x=1") is None
    assert url_problem("https://93.184.216.34/herald") is None  # a public address
    assert url_problem("http://127.0.0.1:8080/hook") == "Must be an https URL."
    allowed = [ipaddress.ip_network("127.0.0.1/32")]
    assert url_problem("http://127.0.0.1:8080/hook", allowed) is None  # tests' receivers
    assert url_problem("http://127.0.0.2:8080/hook", allowed) == "Must be an https URL."
    assert url_problem("https://printer.local/") == "Must not point at a private host name."
