"""The signed-in user's own account: read, update, change password."""
from __future__ import annotations

import pytest

from tests.support.accounts import (
    PASSWORD,
    bearer,
    login,
    register,
    signed_in,
    unique_email,
)

ME = "/api/v1/users/me"
NEW_PASSWORD = "a much better passphrase"


def test_get_and_patch_me(client, app_ctx):
    tokens, headers = signed_in(client)
    me = client.get(ME, headers=headers).get_json()
    assert me == tokens["user"] | {"lastLoginAt": me["lastLoginAt"]}
    patched = client.patch(ME, headers=headers, json={"firstName": "Grace", "companyName": None})
    assert patched.status_code == 200
    assert patched.get_json()["firstName"] == "Grace" and patched.get_json()["companyName"] is None
    assert client.get(ME, headers=headers).get_json()["firstName"] == "Grace"


@pytest.mark.parametrize(
    "payload", [{"email": "new@example.com"}, {"isVerified": True}, {"firstName": 7}, {"lastName": "x" * 500}, []]
)
def test_patch_me_rejects_what_it_may_not_change(client, app_ctx, payload):
    _, headers = signed_in(client)
    before = client.get(ME, headers=headers).get_json()
    assert client.patch(ME, headers=headers, json=payload).status_code == 422
    assert client.get(ME, headers=headers).get_json() == before


def test_password_change_signs_out_every_other_session(client, app_ctx):
    email = unique_email()
    register(client, email)
    here, elsewhere = login(client, email), login(client, email)
    response = client.post(f"{ME}/password", headers=bearer(here["accessToken"]),
                           json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    assert response.status_code == 204
    assert client.get(ME, headers=bearer(here["accessToken"])).status_code == 200
    assert client.get(ME, headers=bearer(elsewhere["accessToken"])).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refreshToken": elsewhere["refreshToken"]}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401
    login(client, email, NEW_PASSWORD)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"currentPassword": "wrong password", "newPassword": NEW_PASSWORD}, "currentPassword"),
        ({"currentPassword": PASSWORD, "newPassword": "short"}, "newPassword"),
        ({"currentPassword": PASSWORD, "newPassword": "qwertyuiop"}, "newPassword"),
        ({"currentPassword": PASSWORD}, "newPassword"),
    ],
)
def test_bad_password_changes_change_nothing(client, app_ctx, payload, field):
    email = unique_email()
    register(client, email)
    here, elsewhere = login(client, email), login(client, email)
    response = client.post(f"{ME}/password", headers=bearer(here["accessToken"]), json=payload)
    assert response.status_code == 422 and field in response.get_json()["errors"]
    assert client.get(ME, headers=bearer(elsewhere["accessToken"])).status_code == 200
    login(client, email, PASSWORD)
