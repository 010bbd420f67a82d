"""Merchant settings through HTTP: defaults, changes per channel, validation with paths, nothing
stored by a refused change, and each merchant's own."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import MerchantSettings
from tests.support.accounts import signed_in

SETTINGS = "/api/v1/settings"
DEFAULTS = {
    "timezone": "UTC", "quietHours": {}, "frequencyCaps": {},
    "utm": {"enabled": True, "source": "herald"},
    "attribution": {"clickWindowDays": 5, "openWindowDays": 1},
    "updatedAt": None,
}


def test_the_defaults_until_something_changes(client, app_ctx):
    _, headers = signed_in(client)
    assert client.get(SETTINGS, headers=headers).get_json() == DEFAULTS
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MerchantSettings)) == 0


def test_changes_apply_per_channel_and_per_field(client, app_ctx):
    _, headers = signed_in(client)
    first = client.patch(SETTINGS, headers=headers, json={
        "timezone": "Asia/Tokyo",
        "quietHours": {"sms": {"start": "21:00", "end": "08:00"}, "push": {"start": "22:30", "end": "07:00"}},
        "frequencyCaps": {"email": [{"messages": 1, "windowHours": 16}, {"messages": 5, "windowHours": 168}]},
        "utm": {"source": "newsletter"},
    })
    assert first.status_code == 200
    body = first.get_json()
    assert body["timezone"] == "Asia/Tokyo" and body["updatedAt"] is not None
    assert body["utm"] == {"enabled": True, "source": "newsletter"}
    assert body["attribution"] == DEFAULTS["attribution"]
    second = client.patch(SETTINGS, headers=headers, json={
        "quietHours": {"push": None}, "frequencyCaps": {"sms": [{"messages": 2, "windowHours": 24}]},
        "attribution": {"openWindowDays": 0}}).get_json()
    assert second["quietHours"] == {"sms": {"start": "21:00", "end": "08:00"}}
    assert second["frequencyCaps"] == {"email": [{"messages": 1, "windowHours": 16}, {"messages": 5, "windowHours": 168}],
                                       "sms": [{"messages": 2, "windowHours": 24}]}
    assert second["attribution"] == {"clickWindowDays": 5, "openWindowDays": 0}
    assert second["timezone"] == "Asia/Tokyo"  # untouched by a change that did not name it
    assert client.get(SETTINGS, headers=headers).get_json() == second


@pytest.mark.parametrize("body, path", [
    ({"timezone": "Mars/Olympus"}, ["timezone"]),
    ({"timezone": "/etc/passwd"}, ["timezone"]),
    ({"quietHours": {"fax": {"start": "21:00", "end": "08:00"}}}, ["quietHours", "fax", "key"]),
    ({"quietHours": {"sms": {"start": "25:00", "end": "08:00"}}}, ["quietHours", "sms", "value", "start"]),
    ({"quietHours": {"sms": {"start": "08:00", "end": "08:00"}}}, ["quietHours", "sms", "value", "end"]),
    ({"quietHours": {"sms": {"start": "21:00"}}}, ["quietHours", "sms", "value", "end"]),
    ({"frequencyCaps": {"email": [{"messages": 0, "windowHours": 16}]}},
     ["frequencyCaps", "email", "value", "0", "messages"]),
    ({"frequencyCaps": {"email": [{"messages": 1, "windowHours": 9000}]}},
     ["frequencyCaps", "email", "value", "0", "windowHours"]),
    ({"frequencyCaps": {"email": [{"messages": 1, "windowHours": 1}] * 6}}, ["frequencyCaps", "email", "value"]),
    ({"frequencyCaps": {"email": [{"messages": "1", "windowHours": 16}]}},
     ["frequencyCaps", "email", "value", "0", "messages"]),
    ({"utm": {"source": ""}}, ["utm", "source"]),
    ({"attribution": {"clickWindowDays": 0}}, ["attribution", "clickWindowDays"]),
    ({"attribution": {"openWindowDays": 91}}, ["attribution", "openWindowDays"]),
    ({"sendEverythingNow": True}, ["sendEverythingNow"]),
])
def test_bad_settings_are_422_with_their_path_and_change_nothing(client, app_ctx, body, path):
    _, headers = signed_in(client)
    client.patch(SETTINGS, headers=headers, json={"timezone": "Europe/Paris"})
    before = client.get(SETTINGS, headers=headers).get_json()
    response = client.patch(SETTINGS, headers=headers, json={**body, "utm": {"enabled": False, **body.get("utm", {})}})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    for part in path:
        errors = errors[part] if part in errors else errors[int(part)]
    assert errors
    assert client.get(SETTINGS, headers=headers).get_json() == before


def test_each_merchant_has_their_own(client, app_ctx):
    _, mine = signed_in(client)
    _, theirs = signed_in(client)
    client.patch(SETTINGS, headers=mine, json={"timezone": "America/New_York"})
    assert client.get(SETTINGS, headers=theirs).get_json() == DEFAULTS
    assert client.get(SETTINGS).status_code == 401


CONTACTS = "/api/v1/contacts"


def test_a_contacts_timezone_is_their_own_else_their_phones_else_the_merchants(client, app_ctx):
    _, headers = signed_in(client)
    own = client.post(CONTACTS, headers=headers, json={"email": "ada@example.com", "phone": "+14155550100",
                                                       "timezone": "Asia/Tokyo"}).get_json()
    assert (own["timezone"], own["timezoneSource"]) == ("Asia/Tokyo", "contact")
    cleared = client.patch(f"{CONTACTS}/{own['id']}", headers=headers, json={"timezone": None}).get_json()
    assert (cleared["timezone"], cleared["timezoneSource"]) == ("America/Los_Angeles", "phone")  # +1 415
    # A number whose region spans many zones says nothing: the merchant's default stands.
    wide = client.post(CONTACTS, headers=headers, json={"phone": "+79161234567"}).get_json()
    assert (wide["timezone"], wide["timezoneSource"]) == ("UTC", "merchant_default")
    client.patch(SETTINGS, headers=headers, json={"timezone": "Europe/Paris"})
    listed = {c["id"]: (c["timezone"], c["timezoneSource"]) for c in client.get(CONTACTS, headers=headers).get_json()}
    assert listed == {own["id"]: ("America/Los_Angeles", "phone"), wide["id"]: ("Europe/Paris", "merchant_default")}
    moved = client.patch(f"{CONTACTS}/{wide['id']}", headers=headers, json={"timezone": "Asia/Vladivostok"}).get_json()
    assert (moved["timezone"], moved["timezoneSource"]) == ("Asia/Vladivostok", "contact")


def test_a_bad_contact_timezone_is_422_and_changes_nothing(client, app_ctx):
    _, headers = signed_in(client)
    contact = client.post(CONTACTS, headers=headers, json={"email": "b@example.com", "timezone": "Europe/Paris"}).get_json()
    response = client.patch(f"{CONTACTS}/{contact['id']}", headers=headers,
                            json={"firstName": "Bea", "timezone": "Europe/Atlantis"})
    assert response.status_code == 422 and "timezone" in response.get_json()["errors"]
    shown = client.get(f"{CONTACTS}/{contact['id']}", headers=headers).get_json()
    assert (shown["timezone"], shown["firstName"]) == ("Europe/Paris", None)


def test_imports_set_timezones_and_name_a_bad_one(client, app_ctx):
    _, headers = signed_in(client)
    text = "Email,Time Zone\r\nt@example.com,Asia/Tokyo\r\nn@example.com,Nowhere/Zone\r\n"
    result = client.post(f"{CONTACTS}/import", headers=headers, data=text.encode(), content_type="text/csv").get_json()
    assert (result["created"], result["failed"]) == (1, 1)
    assert [(e["row"], set(e["errors"])) for e in result["errors"]] == [(2, {"timezone"})]
    (tokyo,) = client.get(CONTACTS, headers=headers).get_json()
    assert (tokyo["email"], tokyo["timezone"], tokyo["timezoneSource"]) == ("t@example.com", "Asia/Tokyo", "contact")
