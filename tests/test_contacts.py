"""Contacts API: CRUD, search, consent, unsubscribe, import, identities, tenant isolation."""
from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Contact, ContactIdentity
from tests.support.accounts import signed_in

CONTACTS = "/api/v1/contacts"
IMPORT = f"{CONTACTS}/import"
BASE = {"email": "a@example.com"}
SHAPE = {"id", "email", "phone", "firstName", "lastName", "attributes", "externalIds", "consent",
         "pushSubscriptions", "timezone", "timezoneSource", "createdAt", "updatedAt"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def push(n: int = 1, **override) -> dict:
    """A browser's PushSubscription.toJSON()."""
    return {"endpoint": f"https://fcm.googleapis.com/fcm/send/device-{n}", "expirationTime": None,
            "keys": {"p256dh": _b64(b"\x04" + bytes([n]) * 64), "auth": _b64(bytes([n]) * 16)}} | override


def create(client, headers, **fields) -> dict:
    response = client.post(CONTACTS, headers=headers, json=fields)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client, headers, query: str = "") -> list[dict]:
    response = client.get(f"{CONTACTS}?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def identities(contact_id: str) -> set[tuple[str, str]]:
    rows = db.session.execute(sa.select(ContactIdentity.kind, ContactIdentity.value)
                              .where(ContactIdentity.contact_id == uuid.UUID(contact_id)))
    return {(row.kind, row.value) for row in rows}


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def import_json(client, headers, rows) -> dict:
    response = client.post(IMPORT, headers=headers, json=rows)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def import_csv(client, headers, text: str, **kwargs):
    return client.post(IMPORT, headers=headers, data=text.encode(), content_type="text/csv", **kwargs)


# --- Create, read, update, delete ---------------------------------------------------------------

def test_create_and_get(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="Ada@Example.com", phone="+1 (415) 555-0100", firstName="Ada",
                     lastName="Lovelace", attributes={"plan": "pro", "orders": 3, "address": {"city": "London"}},
                     externalIds={"shopifyCustomerId": "123"})
    assert set(contact) == SHAPE
    assert contact["email"] == "Ada@Example.com" and contact["phone"] == "+14155550100"
    assert contact["attributes"] == {"plan": "pro", "orders": 3, "address": {"city": "London"}}
    assert contact["consent"] == {"email": "subscribed", "sms": "subscribed", "whatsapp": "subscribed"}
    assert contact["pushSubscriptions"] == [] and contact["createdAt"].endswith("+00:00")
    assert client.get(f"{CONTACTS}/{contact['id']}", headers=headers).get_json() == contact


@pytest.mark.parametrize("fields, consent", [
    ({"email": "e@example.com"}, {"email": "subscribed"}),
    ({"phone": "+447911123456"}, {"sms": "subscribed", "whatsapp": "subscribed"}),
    ({"email": "e@example.com", "pushSubscriptions": [push()]}, {"email": "subscribed", "push": "subscribed"}),
    ({"phone": "+447911123456", "consent": {"sms": "unsubscribed"}}, {"sms": "unsubscribed", "whatsapp": "subscribed"}),
    ({"email": "e@example.com", "consent": {"push": "unsubscribed"}}, {"email": "subscribed", "push": "unsubscribed"}),
])
def test_default_consent_follows_addresses(client, app_ctx, fields, consent):
    _, headers = signed_in(client)
    assert create(client, headers, **fields)["consent"] == consent


def test_push_subscriptions_hide_keys_and_patch_replaces_them(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="p@example.com", pushSubscriptions=[push(1), push(2)])
    assert [set(s) for s in contact["pushSubscriptions"]] == [{"id", "endpoint", "createdAt"}] * 2
    assert "p256dh" not in json.dumps(contact) and "auth" not in json.dumps(contact["pushSubscriptions"])
    kept = next(s for s in contact["pushSubscriptions"] if s["endpoint"] == push(2)["endpoint"])
    response = client.patch(f"{CONTACTS}/{contact['id']}", headers=headers,
                            json={"pushSubscriptions": [push(2), push(3)]})
    assert response.status_code == 200
    after = {s["endpoint"]: s["id"] for s in response.get_json()["pushSubscriptions"]}
    assert after.keys() == {push(2)["endpoint"], push(3)["endpoint"]} and after[kept["endpoint"]] == kept["id"]


def test_update(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="old@example.com", phone="+14155550101", attributes={"a": 1, "b": 2})
    url = f"{CONTACTS}/{contact['id']}"
    response = client.patch(url, headers=headers, json={"firstName": "Grace", "attributes": {"c": [1, {"d": None}]},
                                                        "email": None})
    assert response.status_code == 200
    body = response.get_json()
    assert body["firstName"] == "Grace" and body["email"] is None and body["phone"] == "+14155550101"
    assert body["attributes"] == {"c": [1, {"d": None}]}
    assert client.get(url, headers=headers).get_json() == body
    assert client.patch(url, headers=headers, json={}).get_json() == body
    refused = client.patch(url, headers=headers, json={"phone": None})
    assert refused.status_code == 422 and set(refused.get_json()["errors"]) == {"email", "phone"}
    assert client.get(url, headers=headers).get_json() == body


def test_delete(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="gone@example.com", pushSubscriptions=[push()])
    url = f"{CONTACTS}/{contact['id']}"
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    assert client.delete(url, headers=headers).status_code == 404
    assert identities(contact["id"]) == set()
    # The address and the push endpoint are free again.
    create(client, headers, email="gone@example.com", pushSubscriptions=[push()])


# --- Listing and search -------------------------------------------------------------------------

def test_list_pages_newest_first(client, app_ctx):
    _, headers = signed_in(client)
    ids = [create(client, headers, email=f"c{n}@example.com")["id"] for n in range(3)]
    # Rows made in one test transaction share now(); give them the order they were made in.
    for minute, contact_id in enumerate(ids):
        db.session.execute(sa.update(Contact).where(Contact.id == uuid.UUID(contact_id))
                           .values(created_at=sa.text(f"'2024-01-01 00:0{minute}:00'")))
    response = client.get(f"{CONTACTS}?page=1&page_size=2", headers=headers)
    assert [c["id"] for c in response.get_json()] == [ids[2], ids[1]]
    assert json.loads(response.headers["X-Pagination"])["total"] == 3
    assert [c["id"] for c in listed(client, headers, "page=2&page_size=2")] == [ids[0]]


def test_list_filters_and_search(client, app_ctx):
    _, headers = signed_in(client)
    ada = create(client, headers, email="Ada@Example.com", firstName="Ada", lastName="Lovelace")
    bob = create(client, headers, phone="+14155550123", firstName="100%_off")
    cy = create(client, headers, email="cy@example.org", lastName="Lovelace-Smith", consent={"email": "unsubscribed"})

    def ids(query: str) -> set[str]:
        return {c["id"] for c in listed(client, headers, query)}

    assert ids("email=ada@EXAMPLE.com") == {ada["id"]}
    assert ids("email=ada") == set()
    assert ids("phone=%2B1%20415%20555%200123") == {bob["id"]}
    assert ids("q=lovelace") == {ada["id"], cy["id"]}
    assert ids("q=EXAMPLE.") == {ada["id"], cy["id"]}
    assert ids("q=5550123") == {bob["id"]}
    assert ids("q=%25") == {bob["id"]} and ids("q=_") == {bob["id"]}
    assert ids("consent.email=unsubscribed") == {cy["id"]}
    assert ids("consent.email=subscribed&q=lovelace") == {ada["id"]}
    for bad in ("phone=12", "consent.email=maybe", "q=" + "x" * 201):
        assert client.get(f"{CONTACTS}?{bad}", headers=headers).status_code == 422


# --- Validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, field", [
    ({}, "email"),
    ({"email": None, "phone": None}, "phone"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "a" * 250 + "@example.com"}, "email"),
    ({"email": 12}, "email"),
    ({"phone": "12345"}, "phone"),
    ({"phone": "415 555 0100"}, "phone"),
    (BASE | {"firstName": 7}, "firstName"),
    (BASE | {"lastName": "x" * 101}, "lastName"),
    (BASE | {"firstName": "a\x00b"}, "firstName"),
    (BASE | {"nickname": "x"}, "nickname"),
    (BASE | {"attributes": "x"}, "attributes"),
    (BASE | {"attributes": [1]}, "attributes"),
    (BASE | {"attributes": {"": 1}}, "attributes"),
    (BASE | {"attributes": {"nested": ["\x00"]}}, "attributes"),
    (BASE | {"attributes": {f"k{n}": n for n in range(101)}}, "attributes"),
    (BASE | {"externalIds": {"twitter": "x"}}, "externalIds"),
    (BASE | {"externalIds": {"shopifyCustomerId": 123}}, "externalIds"),
    (BASE | {"externalIds": {"shopifyCustomerId": ""}}, "externalIds"),
    (BASE | {"consent": {"fax": "subscribed"}}, "consent"),
    (BASE | {"consent": {"email": "maybe"}}, "consent"),
    (BASE | {"consent": ["email"]}, "consent"),
    (BASE | {"pushSubscriptions": [push(endpoint="http://push.example.com/x")]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": [push(endpoint="not a url")]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": [push(keys={"p256dh": "short", "auth": "x"})]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": [push(keys={"p256dh": push()["keys"]["p256dh"]})]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": [{"endpoint": push()["endpoint"]}]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": [push(1), push(1)]}, "pushSubscriptions"),
    (BASE | {"pushSubscriptions": {"endpoint": "x"}}, "pushSubscriptions"),
])
def test_bad_input_is_refused_and_nothing_is_written(client, app_ctx, payload, field):
    _, headers = signed_in(client)
    response = client.post(CONTACTS, headers=headers, json=payload)
    body = response.get_json()
    assert response.status_code == 422 and body["code"] == "validation_failed" and field in body["errors"], body
    assert listed(client, headers) == []


@pytest.mark.parametrize("data, status", [
    (b'{"email": "a@example.com",', 400),
    (b'{"email": "a@example.com", "attributes": {"x": NaN}}', 422),
    (b'[{"email": "a@example.com"}]', 422),
    (b'"a@example.com"', 422),
])
def test_malformed_bodies(client, app_ctx, data, status):
    _, headers = signed_in(client)
    response = client.post(CONTACTS, headers=headers, data=data, content_type="application/json")
    assert response.status_code == status and response.get_json()["message"]
    assert listed(client, headers) == []


def test_bad_ids_and_missing_token(client, app_ctx):
    _, headers = signed_in(client)
    assert client.get(f"{CONTACTS}/not-a-uuid", headers=headers).status_code == 404
    assert client.get(f"{CONTACTS}/{uuid.uuid4()}", headers=headers).get_json()["code"] == "not_found"
    assert client.get(CONTACTS).status_code == 401
    assert client.post(IMPORT, json=[]).status_code == 401


# --- Conflicts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("first, second, field", [
    ({"email": "Dup@Example.com"}, {"email": "dup@example.COM"}, "email"),
    ({"phone": "+14155550100"}, {"phone": "+1 415-555-0100"}, "phone"),
    ({"email": "a@example.com", "externalIds": {"ga4UserId": "u1"}},
     {"email": "b@example.com", "externalIds": {"ga4UserId": "u1"}}, "externalIds"),
    ({"email": "a@example.com", "pushSubscriptions": [push()]},
     {"email": "b@example.com", "pushSubscriptions": [push()]}, "pushSubscriptions"),
])
def test_conflicts_answer_409_and_change_nothing(client, app_ctx, first, second, field):
    _, headers = signed_in(client)
    kept = create(client, headers, **first)
    response = client.post(CONTACTS, headers=headers, json=second)
    assert response.status_code == 409 and field in response.get_json()["errors"], response.get_json()
    assert listed(client, headers) == [kept]
    other = create(client, headers, email="other@example.com")
    response = client.patch(f"{CONTACTS}/{other['id']}", headers=headers, json=second)
    assert response.status_code == 409 and field in response.get_json()["errors"]
    assert client.get(f"{CONTACTS}/{other['id']}", headers=headers).get_json() == other
    assert identities(other["id"]) == {("email", "other@example.com"), ("email_sha256", sha("other@example.com"))}


# --- Consent and unsubscribe --------------------------------------------------------------------

def test_contact_unsubscribe_cannot_be_undone_by_the_merchant(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="u@example.com", phone="+14155550102")
    url = f"{CONTACTS}/{contact['id']}"
    response = client.post(f"{url}/unsubscribe", headers=headers, json={"channels": ["email"]})
    assert response.status_code == 200
    assert response.get_json()["consent"] == {"email": "unsubscribed", "sms": "subscribed", "whatsapp": "subscribed"}

    patched = client.patch(url, headers=headers, json={"consent": {"email": "subscribed", "sms": "unsubscribed"}})
    assert patched.get_json()["consent"] == {"email": "unsubscribed", "sms": "unsubscribed", "whatsapp": "subscribed"}
    # The merchant's own opt-out is the merchant's to undo; the contact's is not.
    patched = client.patch(url, headers=headers, json={"consent": {"email": "subscribed", "sms": "subscribed"}})
    assert patched.get_json()["consent"] == {"email": "unsubscribed", "sms": "subscribed", "whatsapp": "subscribed"}

    result = import_json(client, headers, [{"email": "U@example.com", "consent": {"email": "subscribed"}}])
    assert result == {"created": 0, "updated": 1, "failed": 0, "errors": []}
    csv_result = import_csv(client, headers, "email,consent.email\nu@example.com,subscribed\n")
    assert csv_result.get_json()["updated"] == 1
    assert client.get(url, headers=headers).get_json()["consent"]["email"] == "unsubscribed"


def test_unsubscribe_everything_and_bad_channels(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="all@example.com")
    url = f"{CONTACTS}/{contact['id']}/unsubscribe"
    for bad in ({"channels": ["fax"]}, {"channels": []}, {"channels": "email"}, {"other": 1}):
        assert client.post(url, headers=headers, json=bad).status_code == 422
    response = client.post(url, headers=headers)
    assert response.status_code == 200
    assert response.get_json()["consent"] == dict.fromkeys(("email", "sms", "push", "whatsapp"), "unsubscribed")
    # A phone added later does not resubscribe the channels the contact left.
    patched = client.patch(f"{CONTACTS}/{contact['id']}", headers=headers, json={"phone": "+14155550109"})
    assert set(patched.get_json()["consent"].values()) == {"unsubscribed"}


# --- Import -------------------------------------------------------------------------------------

def test_import_json_upserts_and_reports_bad_rows(client, app_ctx):
    _, headers = signed_in(client)
    existing = create(client, headers, email="Known@Example.com", firstName="Old", attributes={"a": 1, "b": 1})
    taken = create(client, headers, email="taken@example.com", externalIds={"metaExternalId": "m1"})
    rows = [
        {"email": "known@example.com", "firstName": "New", "attributes": {"b": 2, "c": 3}},  # 1: update
        {"email": "not-an-email"},                                                         # 2: invalid
        "just a string",                                                                   # 3: not an object
        {"phone": "+14155550103", "lastName": "Fresh"},                                    # 4: create
        {"email": "clash@example.com", "externalIds": {"metaExternalId": "m1"}},           # 5: conflict
        {"phone": "+1 415 555 0103", "firstName": "Again"},                                # 6: updates row 4
        {"email": "extra@example.com", "color": "blue"},                                   # 7: unknown field
    ]
    result = import_json(client, headers, rows)
    assert (result["created"], result["updated"], result["failed"]) == (1, 2, 4)
    assert [error["row"] for error in result["errors"]] == [2, 3, 5, 7]
    errors = {error["row"]: error["errors"] for error in result["errors"]}
    assert "email" in errors[2] and "externalIds" in errors[5] and "color" in errors[7]

    contacts = {c["email"] or c["phone"]: c for c in listed(client, headers)}
    # Matched case-insensitively; a given email overwrites the stored one as written.
    assert set(contacts) == {"known@example.com", "taken@example.com", "+14155550103"}
    updated = contacts["known@example.com"]
    assert updated["id"] == existing["id"] and updated["firstName"] == "New"
    assert updated["attributes"] == {"a": 1, "b": 2, "c": 3}
    assert contacts["+14155550103"]["firstName"] == "Again" and contacts["+14155550103"]["lastName"] == "Fresh"
    assert contacts["+14155550103"]["consent"] == {"sms": "subscribed", "whatsapp": "subscribed"}
    assert contacts["taken@example.com"] == taken


def test_import_csv(client, app_ctx):
    _, headers = signed_in(client)
    existing = create(client, headers, phone="+14155550104", attributes={"tier": "gold"})
    text = ("\ufeffEmail,Phone,First Name,last_name,consent.SMS,Plan\r\n"
            "new@example.com,,Ann,Lee,,pro\r\n"
            ",+1 415 555 0104,Bo,,unsubscribed,basic\r\n"
            "bad-email,,,,,\r\n"
            "x@example.com,,,,maybe,\r\n"
            "q@example.com,,\"Smith, Jr.\",,,\r\n")
    response = import_csv(client, headers, text)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert (result["created"], result["updated"], result["failed"]) == (2, 1, 2)
    assert [(e["row"], set(e["errors"])) for e in result["errors"]] == [(3, {"email"}), (4, {"consent"})]
    contacts = {c["id"]: c for c in listed(client, headers)}
    bo = contacts[existing["id"]]
    assert bo["firstName"] == "Bo" and bo["attributes"] == {"tier": "gold", "Plan": "basic"}
    assert bo["consent"] == {"sms": "unsubscribed", "whatsapp": "subscribed"}
    ann = next(c for c in contacts.values() if c["email"] == "new@example.com")
    assert (ann["firstName"], ann["lastName"], ann["phone"], ann["attributes"]) == ("Ann", "Lee", None, {"Plan": "pro"})
    assert any(c["firstName"] == "Smith, Jr." for c in contacts.values())


def test_import_hands_addresses_over_between_rows(client, app_ctx):
    """A row may take an address that an earlier row of the same import took from another contact."""
    _, headers = signed_in(client)
    ann = create(client, headers, email="e1@example.com", phone="+14155550111")
    ben = create(client, headers, email="e2@example.com", phone="+14155550112")
    result = import_json(client, headers, [
        {"phone": "+14155550111", "email": "e3@example.com"},  # Ann gives up e1
        {"phone": "+14155550112", "email": "e1@example.com"},  # Ben takes e1, gives up e2
        {"email": "E2@example.com", "firstName": "Cy"},        # a new contact takes e2
    ])
    assert result == {"created": 1, "updated": 2, "failed": 0, "errors": []}
    emails = {c["id"]: c["email"] for c in listed(client, headers)}
    assert emails[ann["id"]] == "e3@example.com" and emails[ben["id"]] == "e1@example.com"
    (cy,) = set(emails) - {ann["id"], ben["id"]}
    assert emails[cy] == "E2@example.com"
    assert ("email", "e1@example.com") in identities(ben["id"]) and ("email", "e2@example.com") in identities(cy)
    assert ("email", "e1@example.com") not in identities(ann["id"])


def test_import_rows_that_collide_are_reported_and_not_written(client, app_ctx):
    _, headers = signed_in(client)
    ann = create(client, headers, email="ann@example.com", pushSubscriptions=[push(1)],
                 attributes={f"k{n}": n for n in range(99)})
    ben = create(client, headers, phone="+14155550113")
    result = import_json(client, headers, [
        {"email": "ann@example.com", "phone": "+14155550113", "firstName": "X"},  # Ben's phone
        {"email": "new@example.com", "pushSubscriptions": [push(1)]},              # Ann's endpoint
        {"email": "ann@example.com", "attributes": {"extra1": 1, "extra2": 2}},    # 101 attributes
        {"email": "ann@example.com", "pushSubscriptions": [push(1), push(2)]},     # Ann's own: fine
    ])
    assert (result["created"], result["updated"], result["failed"]) == (0, 1, 3)
    assert [(e["row"], set(e["errors"])) for e in result["errors"]] == [
        (1, {"phone"}), (2, {"pushSubscriptions"}), (3, {"attributes"})]
    after = client.get(f"{CONTACTS}/{ann['id']}", headers=headers).get_json()
    assert after["firstName"] is None and after["phone"] is None and len(after["attributes"]) == 99
    assert len(after["pushSubscriptions"]) == 2
    assert [c["id"] for c in listed(client, headers, "email=new@example.com")] == []
    assert client.get(f"{CONTACTS}/{ben['id']}", headers=headers).get_json() == ben


@pytest.mark.parametrize("body, content_type, status", [
    ("email,consent.fax\na@example.com,subscribed\n", "text/csv", 422),
    ("email,phone\na@example.com,+14155550100,extra\n", "text/csv", 422),
    ("email,email\na@example.com,b@example.com\n", "text/csv", 422),
    ("email,\na@example.com,\n", "text/csv", 422),
    ("", "text/csv", 422),
    ('{"email": "a@example.com"}', "application/json", 422),
    ('[{"email": "a@example.com"}', "application/json", 400),
    ("email\na@example.com\n", "text/plain", 415),
    (json.dumps([{}] * 10_001), "application/json", 413),
])
def test_import_refuses_broken_files_whole(client, app_ctx, body, content_type, status):
    _, headers = signed_in(client)
    response = client.post(IMPORT, headers=headers, data=body.encode(), content_type=content_type)
    assert response.status_code == status and response.get_json()["message"], response.get_json()
    assert listed(client, headers) == []


def test_import_matches_a_contact_known_only_by_email_hash(client, app_ctx):
    """A contact that events created from a hashed address is updated by an import, not a clash."""
    tokens, headers = signed_in(client)
    user_id = uuid.UUID(tokens["user"]["id"])
    known = Contact(id=uuid.uuid4(), user_id=user_id, attributes={}, external_ids={}, consent={}, consent_sources={})
    db.session.add(known)
    db.session.flush()
    db.session.add(ContactIdentity(user_id=user_id, kind="email_sha256", value=sha("hashed@example.com"),
                                   contact_id=known.id))
    db.session.commit()
    result = import_json(client, headers, [{"email": "Hashed@example.com"}])
    assert (result["created"], result["updated"]) == (0, 1)
    assert [c["id"] for c in listed(client, headers)] == [str(known.id)]
    assert identities(str(known.id)) == {("email", "hashed@example.com"), ("email_sha256", sha("hashed@example.com"))}


# --- Identities and tenants ---------------------------------------------------------------------

def test_identity_rows_follow_the_contact(client, app_ctx):
    _, headers = signed_in(client)
    contact = create(client, headers, email="Id@Example.com", phone="+14155550105",
                     externalIds={"shopifyCustomerId": "42", "ga4ClientId": "c.1"})
    assert identities(contact["id"]) == {
        ("email", "id@example.com"), ("email_sha256", sha("id@example.com")),
        ("phone", "+14155550105"), ("phone_sha256", sha("14155550105")),
        ("shopifyCustomerId", "42"), ("ga4ClientId", "c.1"),
    }
    client.patch(f"{CONTACTS}/{contact['id']}", headers=headers,
                 json={"email": "new@example.com", "phone": None, "externalIds": {"ga4UserId": "u9"}})
    assert identities(contact["id"]) == {
        ("email", "new@example.com"), ("email_sha256", sha("new@example.com")), ("ga4UserId", "u9"),
    }
    import_json(client, headers, [{"email": "NEW@example.com", "phone": "+14155550106",
                                   "externalIds": {"metaExternalId": "m7"}}])
    assert identities(contact["id"]) == {
        ("email", "new@example.com"), ("email_sha256", sha("new@example.com")), ("ga4UserId", "u9"),
        ("phone", "+14155550106"), ("phone_sha256", sha("14155550106")), ("metaExternalId", "m7"),
    }


def test_merchants_never_see_each_others_contacts(client, app_ctx):
    _, alice = signed_in(client)
    _, bob = signed_in(client)
    contact = create(client, alice, email="shared@example.com", externalIds={"ga4UserId": "g1"})
    url = f"{CONTACTS}/{contact['id']}"
    missing = client.get(f"{CONTACTS}/{uuid.uuid4()}", headers=bob).get_json()
    assert client.get(url, headers=bob).get_json() == missing
    assert client.patch(url, headers=bob, json={"firstName": "Mallory"}).status_code == 404
    assert client.post(f"{url}/unsubscribe", headers=bob).status_code == 404
    assert client.delete(url, headers=bob).status_code == 404
    assert listed(client, bob) == [] and listed(client, bob, "email=shared@example.com") == []
    # Uniqueness is per merchant: Bob may hold the same address and ids, and his import creates his own.
    create(client, bob, email="shared@example.com", externalIds={"ga4UserId": "g1"})
    assert import_json(client, bob, [{"email": "SHARED@example.com", "firstName": "Bob's"}])["updated"] == 1
    assert client.get(url, headers=alice).get_json() == contact
