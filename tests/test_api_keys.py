"""API keys through HTTP: shown once and stored hashed, accepted in place of a login token within their
scopes (403 naming the scope outside them), revoked at once, and unable to manage keys."""
from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import ApiKey, Campaign, Contact
from app.security.api_keys import LOGIN_ONLY, READ, SCOPES
from tests.support.accounts import bearer, signed_in

KEYS = "/api/v1/api-keys"
CONTACTS = "/api/v1/contacts"


def create_key(client, login_headers: dict, scopes: list[str], name: str = "Shop sync") -> dict:
    response = client.post(KEYS, headers=login_headers, json={"name": name, "scopes": scopes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _row(key_id: str) -> ApiKey:
    db.session.expire_all()
    return db.session.get(ApiKey, uuid.UUID(key_id))


def test_a_key_is_shown_once_and_stored_only_as_a_hash(client, app_ctx):
    _, login_headers = signed_in(client)
    created = create_key(client, login_headers, ["read", "contacts:write"])
    key = created["key"]
    assert key.startswith("hk_live_") and created["prefix"] == key[:24]
    assert created["name"] == "Shop sync" and created["scopes"] == ["read", "contacts:write"]
    assert created["createdAt"] and created["lastUsedAt"] is None

    listed = client.get(KEYS, headers=login_headers)
    assert listed.status_code == 200
    assert listed.get_json() == [{field: created[field] for field in
                                  ("id", "name", "prefix", "scopes", "createdAt", "lastUsedAt")}]
    secret = key[len(created["prefix"]) + 1:]
    assert secret not in listed.get_data(as_text=True)

    row = _row(created["id"])
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr([getattr(row, c.key) for c in sa.inspect(ApiKey).column_attrs])


def test_a_key_works_on_get_and_post_routes_in_place_of_a_login_token(client, app_ctx):
    _, login_headers = signed_in(client)
    key = bearer(create_key(client, login_headers, ["read", "contacts:write", "campaigns:write"])["key"])

    created = client.post(CONTACTS, headers=key, json={"email": "shopper@example.com"})
    assert created.status_code == 201, created.get_json()
    assert client.get(f"{CONTACTS}/{created.get_json()['id']}", headers=key).status_code == 200
    assert [c["email"] for c in client.get(CONTACTS, headers=key).get_json()] == ["shopper@example.com"]
    assert client.get("/api/v1/users/me", headers=key).status_code == 200
    campaign = client.post("/api/v1/campaigns", headers=key, json={"name": "Sale"})
    assert campaign.status_code == 201
    launch = f"/api/v1/campaigns/{campaign.get_json()['id']}/launch"
    # Past the key's check, the route answers as it does to the login token (unverified email here).
    assert client.post(launch, headers=key).get_json() == client.post(launch, headers=login_headers).get_json()
    # What the key made is the merchant's, as seen with the login token.
    assert [c["email"] for c in client.get(CONTACTS, headers=login_headers).get_json()] == ["shopper@example.com"]


def test_outside_its_scopes_a_key_gets_403_naming_the_scope_and_changes_nothing(client, app_ctx):
    _, login_headers = signed_in(client)
    read_only = bearer(create_key(client, login_headers, ["read"])["key"])
    refused = client.post(CONTACTS, headers=read_only, json={"email": "shopper@example.com"})
    assert refused.status_code == 403
    body = refused.get_json()
    assert body["code"] == "insufficient_scope" and "'contacts:write'" in body["message"]
    assert 'scope="contacts:write"' in refused.headers["WWW-Authenticate"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 0

    for method, url, scope in (("PATCH", "/api/v1/settings", "settings:write"),
                               ("POST", "/api/v1/campaigns", "campaigns:write"),
                               ("POST", "/api/v1/data-sources", "events:write"),
                               ("POST", "/api/v1/conversations", "conversations:write"),
                               ("PATCH", "/api/v1/users/me", "settings:write")):
        response = client.open(url, method=method, headers=read_only, json={})
        assert (response.status_code, response.get_json()["code"]) == (403, "insufficient_scope"), url
        assert f"'{scope}'" in response.get_json()["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0

    write_only = bearer(create_key(client, login_headers, ["contacts:write"])["key"])
    listing = client.get(CONTACTS, headers=write_only)
    assert listing.status_code == 403 and "'read'" in listing.get_json()["message"]
    # A preview changes nothing: `read` is enough.
    preview = client.post("/api/v1/audiences/preview", headers=read_only, json={"definition": {"conditions": []}})
    assert preview.status_code == 200


def test_a_revoked_key_is_refused_at_once(client, app_ctx):
    _, login_headers = signed_in(client)
    created = create_key(client, login_headers, ["read"])
    key = bearer(created["key"])
    assert client.get(CONTACTS, headers=key).status_code == 200

    assert client.delete(f"{KEYS}/{created['id']}", headers=login_headers).status_code == 204
    refused = client.get(CONTACTS, headers=key)
    assert refused.status_code == 401 and refused.get_json()["code"] == "api_key_revoked"
    assert "WWW-Authenticate" in refused.headers
    assert client.get(KEYS, headers=login_headers).get_json() == []
    assert client.delete(f"{KEYS}/{created['id']}", headers=login_headers).status_code == 404
    assert _row(created["id"]).revoked_at is not None


def test_a_key_cannot_manage_keys_or_the_account(client, app_ctx):
    _, login_headers = signed_in(client)
    created = create_key(client, login_headers, list(SCOPES))
    key = bearer(created["key"])
    for method, url, body in (("GET", KEYS, None),
                              ("POST", KEYS, {"name": "minted", "scopes": ["read"]}),
                              ("DELETE", f"{KEYS}/{created['id']}", None),
                              ("GET", "/api/v1/auth/sessions", None),
                              ("POST", "/api/v1/auth/logout", None),
                              ("POST", "/api/v1/auth/logout-all", None),
                              ("POST", "/api/v1/users/me/password", {"currentPassword": "x", "newPassword": "y" * 12})):
        response = client.open(url, method=method, headers=key, json=body)
        assert (response.status_code, response.get_json()["code"]) == (403, "login_token_required"), url
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 1
    assert _row(created["id"]).revoked_at is None
    assert client.get(CONTACTS, headers=key).status_code == 200


def test_keys_belong_to_their_merchant(client, app_ctx):
    _, alice = signed_in(client)
    _, bob = signed_in(client)
    alice_key = create_key(client, alice, ["read", "contacts:write"])
    client.post(CONTACTS, headers=bob, json={"email": "bobs@example.com"})
    assert client.get(CONTACTS, headers=bearer(alice_key["key"])).get_json() == []
    assert client.delete(f"{KEYS}/{alice_key['id']}", headers=bob).status_code == 404
    assert client.get(KEYS, headers=bob).get_json() == []
    assert client.get(CONTACTS, headers=bearer(alice_key["key"])).status_code == 200


def test_wrong_and_malformed_keys_are_401(client, app_ctx):
    _, login_headers = signed_in(client)
    created = create_key(client, login_headers, ["read"])
    prefix = created["prefix"]
    for bad in (prefix + "_" + "x" * 43, prefix, prefix + "_", "hk_live_zz_secret", "hk_live_" + "0" * 16 + "_abc",
                created["key"] + "x", "hk_test_" + created["key"][8:]):
        response = client.get(CONTACTS, headers=bearer(bad))
        assert (response.status_code, response.get_json()["code"]) == (401, "invalid_api_key"), bad
    assert client.get(CONTACTS, headers=bearer(created["key"])).status_code == 200
    assert client.get(CONTACTS, headers={"Authorization": f"Basic {created['key']}"}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"name": "k", "scopes": ["admin"]}, "scopes"),
    ({"name": "k", "scopes": []}, "scopes"),
    ({"name": "k", "scopes": "read"}, "scopes"),
    ({"name": "", "scopes": ["read"]}, "name"),
    ({"scopes": ["read"]}, "name"),
])
def test_bad_key_requests_are_422_and_create_nothing(client, app_ctx, body, field):
    _, login_headers = signed_in(client)
    response = client.post(KEYS, headers=login_headers, json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 0


def test_last_used_is_written_at_most_once_a_minute(client, app_ctx):
    _, login_headers = signed_in(client)
    created = create_key(client, login_headers, ["read"])
    key = bearer(created["key"])
    client.get(CONTACTS, headers=key)
    first = _row(created["id"]).last_used_at
    assert first is not None
    client.get(CONTACTS, headers=key)
    assert _row(created["id"]).last_used_at == first  # within the minute: no write

    db.session.execute(sa.update(ApiKey).where(ApiKey.id == uuid.UUID(created["id"]))
                       .values(last_used_at=first - timedelta(seconds=61)))
    db.session.commit()
    client.get(CONTACTS, headers=key)
    assert _row(created["id"]).last_used_at > first - timedelta(seconds=61)
    listed = client.get(KEYS, headers=login_headers).get_json()
    assert listed[0]["lastUsedAt"] is not None


def test_a_key_costs_one_statement_like_a_login_token(client, app_ctx):
    """Both credentials are checked with one indexed lookup: the same statements per request."""
    tokens, login_headers = signed_in(client)
    key = bearer(create_key(client, login_headers, ["read"])["key"])
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    connection = db.engines[None]  # every bind is the test's connection (tests/conftest.py)
    sa.event.listen(connection, "before_cursor_execute", count)
    try:
        counts = {}
        for url in (CONTACTS, "/api/v1/users/me"):
            for name, headers in (("token", login_headers), ("key", key)):
                client.get(url, headers=headers)  # warm: statements prepared, lastUsedAt written
                statements.clear()
                assert client.get(url, headers=headers).status_code == 200
                counts[url, name] = len(statements)
                assert sum("EXECUTE herald_" in s for s in statements) == 1, statements
            assert counts[url, "key"] == counts[url, "token"], url
    finally:
        sa.event.remove(connection, "before_cursor_execute", count)
    assert counts["/api/v1/users/me", "key"] == 1  # the check itself loads the merchant


def test_every_authenticated_route_declares_a_known_scope(app):
    """GETs need `read` (or a login token), other methods a write scope; README documents every scope."""
    found = {}
    for rule in app.url_map.iter_rules():
        access = getattr(app.view_functions[rule.endpoint], "route_access", None)
        if access is None:
            continue
        assert access.scope in SCOPES or access.scope == LOGIN_ONLY, rule
        (method,) = rule.methods - {"HEAD", "OPTIONS"}
        assert access.method == method
        found[(method, rule.rule)] = access.scope
        if rule.rule.startswith(("/api/v1/api-keys", "/api/v1/auth/")):
            assert access.scope == LOGIN_ONLY, rule
        elif method == "GET":
            assert access.scope == READ, rule
    assert found[("POST", "/api/v1/contacts")] == "contacts:write"
    assert found[("POST", "/api/v1/campaigns/<uuid:campaign_id>/launch")] == "campaigns:write"
    assert found[("POST", "/api/v1/users/me/password")] == LOGIN_ONLY
    assert set(found.values()) == set(SCOPES) | {LOGIN_ONLY}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for scope in SCOPES:
        assert f"| `{scope}` |" in readme


def test_openapi_documents_both_credentials_and_the_key_routes(client):
    spec = client.get("/openapi.json").get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == schemes["apiKeyAuth"]["scheme"] == "bearer"
    operation = spec["paths"]["/api/v1/contacts"]["post"]
    assert operation["security"] == [{"bearerAuth": []}, {"apiKeyAuth": ["contacts:write"]}]
    assert {"201", "401", "403", "409", "422"} <= set(operation["responses"])
    assert spec["paths"]["/api/v1/contacts"]["get"]["security"][1] == {"apiKeyAuth": ["read"]}
    keys = spec["paths"]["/api/v1/api-keys"]
    assert keys["post"]["security"] == keys["get"]["security"] == [{"bearerAuth": []}]
    assert {"201", "401", "403"} <= set(keys["post"]["responses"])
    assert {"204", "401", "403", "404"} <= set(spec["paths"]["/api/v1/api-keys/{api_key_id}"]["delete"]["responses"])
    assert "key" in spec["components"]["schemas"]["CreatedApiKey"]["properties"]
    assert "key" not in spec["components"]["schemas"]["ApiKey"]["properties"]
