"""Provider accounts through HTTP: create/replace/get/list/delete per channel type, config validation,
secrets at rest and redacted, kept secrets on replace, VAPID keys, tenant isolation, and the lookups
the senders and callbacks use."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from app.extensions import db
from app.models import ProviderAccount
from app.security import secret_box
from app.services.provider_accounts import account_by_ref, decrypted_account_config
from tests.emulators.push_service import vapid_keys, verify_vapid
from tests.support.accounts import signed_in

ACCOUNTS = "/api/v1/provider-accounts"
MASK = "********"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SERVICE_SID = "MG" + "fedcba9876543210" * 2
AUTH_TOKEN = "f" * 32
PRIVATE_KEY, PUBLIC_KEY = vapid_keys()

CONFIGS = {
    "sms": {"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "fromNumber": "+14155550123"},
    "whatsapp": {"phoneNumberId": "106540352242922", "accessToken": "EAAG-whatsapp-secret",
                 "businessAccountId": "102290129340398"},
    "push": {"subject": "mailto:ops@acme.example", "vapidPublicKey": PUBLIC_KEY, "vapidPrivateKey": PRIVATE_KEY},
}
SECRETS = {
    "sms": {"authToken": AUTH_TOKEN},
    "whatsapp": {"accessToken": "EAAG-whatsapp-secret"},
    "push": {"vapidPrivateKey": PRIVATE_KEY},
}
REFS = {"sms": ACCOUNT_SID, "whatsapp": "106540352242922", "push": None}


def _put(client, headers, channel_type: str, config: dict, status: int = 200) -> dict:
    response = client.put(f"{ACCOUNTS}/{channel_type}", headers=headers, json={"config": config})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _row(channel_type: str, user_id: uuid.UUID | None = None) -> ProviderAccount | None:
    db.session.expire_all()
    stmt = sa.select(ProviderAccount).where(ProviderAccount.channel_type == channel_type)
    if user_id is not None:
        stmt = stmt.where(ProviderAccount.user_id == user_id)
    return db.session.scalars(stmt).one_or_none()


def _user_id(tokens: dict) -> uuid.UUID:
    return uuid.UUID(tokens["user"]["id"])


def _assert_redacted(body: dict, channel_type: str, secrets: dict | None = None) -> None:
    for name in SECRETS[channel_type]:
        assert body["config"][name] == MASK
    assert not any(secret in json.dumps(body) for secret in (secrets or SECRETS[channel_type]).values())


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _assert_key_pair(private_b64: str, public_b64: str) -> None:
    """The pair works: what the private half signs, the public half verifies (and nothing else)."""
    private = ec.derive_private_key(int.from_bytes(_b64url_decode(private_b64), "big"), ec.SECP256R1())
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(public_b64))
    signature = private.sign(b"herald", ec.ECDSA(hashes.SHA256()))
    public.verify(signature, b"herald", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"forged", ec.ECDSA(hashes.SHA256()))
    # The form pywebpush signs with, checked the way a push service does.
    origin = "https://push.example"
    header = Vapid.from_string(private_b64).sign({"sub": "mailto:ops@acme.example", "aud": origin,
                                                  "exp": int(time.time()) + 600})["Authorization"]
    assert verify_vapid(header, origin)[1] == _b64url_decode(public_b64)


@pytest.mark.parametrize("channel_type", list(CONFIGS))
def test_create_get_list_replace_delete_each_type(client, app_ctx, channel_type):
    _, headers = signed_in(client)
    url = f"{ACCOUNTS}/{channel_type}"
    assert client.get(url, headers=headers).status_code == 404
    created = _put(client, headers, channel_type, CONFIGS[channel_type])
    assert set(created) == {"channelType", "config", "createdAt", "updatedAt"}
    assert created["channelType"] == channel_type and created["createdAt"].endswith("+00:00")
    _assert_redacted(created, channel_type)
    assert client.get(url, headers=headers).get_json() == created
    assert client.get(ACCOUNTS, headers=headers).get_json() == [created]

    replacement = CONFIGS[channel_type] | {"sms": {"fromNumber": "+14155550199"}, "whatsapp": {"apiVersion": "v22.0"},
                                           "push": {"subject": "https://acme.example/contact"}}[channel_type]
    replaced = _put(client, headers, channel_type, replacement)
    assert replaced["config"] == created["config"] | {k: v for k, v in replacement.items() if k not in SECRETS[channel_type]}
    assert client.get(url, headers=headers).get_json() == replaced
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ProviderAccount)) == 1

    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404
    assert client.get(ACCOUNTS, headers=headers).get_json() == []
    missing = client.delete(url, headers=headers)
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"


def test_list_holds_every_channel_with_paging(client, app_ctx):
    _, headers = signed_in(client)
    for channel_type, config in CONFIGS.items():
        _put(client, headers, channel_type, config)
    response = client.get(ACCOUNTS, headers=headers, query_string={"page_size": 2})
    assert len(response.get_json()) == 2 and json.loads(response.headers["X-Pagination"])["total"] == 3
    listed = client.get(ACCOUNTS, headers=headers).get_json()
    assert sorted(item["channelType"] for item in listed) == ["push", "sms", "whatsapp"]
    for item in listed:
        _assert_redacted(item, item["channelType"])


@pytest.mark.parametrize("channel_type", list(CONFIGS))
def test_secrets_are_encrypted_at_rest_and_account_ref_is_set(client, app_ctx, channel_type):
    tokens, headers = signed_in(client)
    _put(client, headers, channel_type, CONFIGS[channel_type])
    row = _row(channel_type)
    assert row.user_id == _user_id(tokens) and row.account_ref == REFS[channel_type]
    for name, plain in SECRETS[channel_type].items():
        assert row.config[name].startswith("enc:v1:") and plain not in row.config[name]
        assert secret_box.decrypt(row.config[name]) == plain
    assert decrypted_account_config(row.user_id, channel_type) == row.config | SECRETS[channel_type]


def test_config_defaults_and_normalization(client, app_ctx):
    _, headers = signed_in(client)
    sms = _put(client, headers, "sms", {"accountSid": ACCOUNT_SID.upper(), "authToken": AUTH_TOKEN,
                                        "messagingServiceSid": SERVICE_SID.upper(), "fromNumber": None})
    # Stored as Twilio writes SIDs (and its callbacks send them): lower-case hex.
    assert sms["config"] == {"accountSid": ACCOUNT_SID, "authToken": MASK, "messagingServiceSid": SERVICE_SID}
    assert _row("sms").account_ref == ACCOUNT_SID
    whatsapp = _put(client, headers, "whatsapp", {"phoneNumberId": "1065", "accessToken": "t",
                                                  "businessAccountId": None})
    assert whatsapp["config"] == {"phoneNumberId": "1065", "accessToken": MASK, "apiVersion": "v21.0"}
    sms_number = _put(client, headers, "sms", {"accountSid": ACCOUNT_SID, "fromNumber": "+1 (415) 555-0123"})
    assert sms_number["config"]["fromNumber"] == "+14155550123" and "messagingServiceSid" not in sms_number["config"]


@pytest.mark.parametrize(
    "channel_type, changes, path",
    [
        ("sms", {"accountSid": "AC123"}, "accountSid"),
        ("sms", {"accountSid": "SK" + "0" * 32}, "accountSid"),
        ("sms", {"accountSid": 12}, "accountSid"),
        ("sms", {"authToken": "short"}, "authToken"),
        ("sms", {"authToken": "x" * 129}, "authToken"),
        ("sms", {"authToken": "with spaces inside the token"}, "authToken"),
        ("sms", {"authToken": "enc:v1:" + "a" * 20}, "authToken"),
        ("sms", {"authToken": MASK}, "authToken"),
        ("sms", {"authToken": None}, "authToken"),
        ("sms", {"fromNumber": "4155550123"}, "fromNumber"),
        ("sms", {"fromNumber": "+1555"}, "fromNumber"),
        ("sms", {"messagingServiceSid": SERVICE_SID}, "messagingServiceSid"),
        ("sms", {"fromNumber": None}, "fromNumber"),
        ("sms", {"messagingServiceSid": "MG12", "fromNumber": None}, "messagingServiceSid"),
        ("sms", {"extra": "x"}, "extra"),
        ("whatsapp", {"phoneNumberId": "10654x"}, "phoneNumberId"),
        ("whatsapp", {"phoneNumberId": 106540352242922}, "phoneNumberId"),
        ("whatsapp", {"accessToken": ""}, "accessToken"),
        ("whatsapp", {"accessToken": "line\nbreak"}, "accessToken"),
        ("whatsapp", {"apiVersion": "21.0"}, "apiVersion"),
        ("whatsapp", {"businessAccountId": "WABA-1"}, "businessAccountId"),
        ("whatsapp", {"webhookSecret": "x"}, "webhookSecret"),
        ("push", {"subject": "ops@acme.example"}, "subject"),
        ("push", {"subject": "http://acme.example"}, "subject"),
        ("push", {"subject": "mailto:not-an-address"}, "subject"),
        ("push", {"vapidPublicKey": PUBLIC_KEY[:-4]}, "vapidPublicKey"),
        ("push", {"vapidPublicKey": "not base64url!"}, "vapidPublicKey"),
        ("push", {"vapidPublicKey": base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode()}, "vapidPublicKey"),
        ("push", {"vapidPrivateKey": base64.urlsafe_b64encode(bytes(32)).decode()}, "vapidPrivateKey"),
        ("push", {"vapidPrivateKey": PRIVATE_KEY[:-2]}, "vapidPrivateKey"),
        ("push", {"vapidPrivateKey": MASK}, "vapidPrivateKey"),
        ("push", {"vapidPublicKey": vapid_keys()[1]}, "vapidPublicKey"),
        ("push", {"icon": "x"}, "icon"),
    ],
)
def test_invalid_config_is_rejected_with_its_path(client, app_ctx, channel_type, changes, path):
    _, headers = signed_in(client)
    response = client.put(f"{ACCOUNTS}/{channel_type}", headers=headers,
                          json={"config": CONFIGS[channel_type] | changes})
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "validation_failed" and path in body["errors"]["config"], body
    assert client.get(ACCOUNTS, headers=headers).get_json() == [] and _row(channel_type) is None


def test_missing_required_config_fields_are_named(client, app_ctx):
    _, headers = signed_in(client)
    expected = {"sms": {"accountSid", "authToken", "fromNumber", "messagingServiceSid"},
                "whatsapp": {"phoneNumberId", "accessToken"}, "push": {"subject"}}
    for channel_type, fields in expected.items():
        errors = _put(client, headers, channel_type, {}, status=422)["errors"]["config"]
        assert set(errors) == fields, errors
    both = _put(client, headers, "sms", CONFIGS["sms"] | {"messagingServiceSid": SERVICE_SID}, status=422)
    assert set(both["errors"]["config"]) == {"fromNumber", "messagingServiceSid"}


def test_push_public_key_alone_needs_its_private_key(client, app_ctx):
    _, headers = signed_in(client)
    body = _put(client, headers, "push", {"subject": "mailto:ops@acme.example", "vapidPublicKey": PUBLIC_KEY},
                status=422)
    assert set(body["errors"]["config"]) == {"vapidPrivateKey"}


@pytest.mark.parametrize(
    "body, field",
    [({"config": ["not", "an", "object"]}, "config"), ({"config": "x"}, "config"), ({"config": None}, "config"),
     ({}, "config"), ({"config": CONFIGS["sms"], "channelType": "sms"}, "channelType")],
)
def test_invalid_body_is_rejected(client, app_ctx, body, field):
    _, headers = signed_in(client)
    response = client.put(f"{ACCOUNTS}/sms", headers=headers, json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"]
    assert _row("sms") is None


def test_malformed_bodies_and_unknown_channel_types(client, app_ctx):
    _, headers = signed_in(client)
    malformed = client.put(f"{ACCOUNTS}/sms", headers=headers, data=b"{nope", content_type="application/json")
    assert malformed.status_code == 400 and malformed.get_json()["code"] == "bad_request"
    assert client.put(f"{ACCOUNTS}/sms", headers=headers, json=[]).status_code == 422
    for channel_type in ("email", "SMS", "telegram"):
        url = f"{ACCOUNTS}/{channel_type}"
        for response in (client.get(url, headers=headers), client.delete(url, headers=headers),
                         client.put(url, headers=headers, json={"config": CONFIGS["sms"]})):
            assert response.status_code == 404 and response.get_json()["code"] == "not_found"
    assert client.get(ACCOUNTS, headers=headers).get_json() == []


def test_replace_keeps_omitted_and_masked_secrets(client, app_ctx):
    _, headers = signed_in(client)
    _put(client, headers, "sms", CONFIGS["sms"])
    omitted = _put(client, headers, "sms", {"accountSid": ACCOUNT_SID, "messagingServiceSid": SERVICE_SID})
    assert omitted["config"] == {"accountSid": ACCOUNT_SID, "authToken": MASK, "messagingServiceSid": SERVICE_SID}
    assert decrypted_account_config(_row("sms").user_id, "sms")["authToken"] == AUTH_TOKEN

    # A client that sends back what GET showed it changes nothing secret.
    masked = _put(client, headers, "sms", omitted["config"])
    assert masked["config"] == omitted["config"]
    row = _row("sms")
    assert row.config["authToken"].startswith("enc:v1:")
    assert decrypted_account_config(row.user_id, "sms")["authToken"] == AUTH_TOKEN

    new_token = "9e" * 16
    replaced = _put(client, headers, "sms", omitted["config"] | {"authToken": new_token})
    _assert_redacted(replaced, "sms", {"authToken": new_token})
    assert decrypted_account_config(row.user_id, "sms")["authToken"] == new_token


def test_replace_drops_optional_fields_left_out(client, app_ctx):
    _, headers = signed_in(client)
    _put(client, headers, "whatsapp", CONFIGS["whatsapp"])
    replaced = _put(client, headers, "whatsapp", {"phoneNumberId": "777"})
    assert replaced["config"] == {"phoneNumberId": "777", "accessToken": MASK, "apiVersion": "v21.0"}
    row = _row("whatsapp")
    assert row.account_ref == "777"
    assert account_by_ref("whatsapp", "777") == (row.user_id, row.config | SECRETS["whatsapp"])
    assert account_by_ref("whatsapp", REFS["whatsapp"]) is None


def test_a_bad_replace_changes_nothing(client, app_ctx):
    _, headers = signed_in(client)
    created = _put(client, headers, "sms", CONFIGS["sms"])
    stored = dict(_row("sms").config)
    for config in ({"accountSid": ACCOUNT_SID}, {"accountSid": "AC1", "fromNumber": "+14155550123"},
                   CONFIGS["sms"] | {"authToken": "short"}, CONFIGS["sms"] | {"unknown": 1}):
        assert "config" in _put(client, headers, "sms", config, status=422)["errors"]
    assert client.get(f"{ACCOUNTS}/sms", headers=headers).get_json() == created
    assert _row("sms").config == stored


def test_push_generates_a_key_pair_when_none_is_given(client, app_ctx):
    _, headers = signed_in(client)
    created = _put(client, headers, "push", {"subject": "mailto:ops@acme.example"})
    public = created["config"]["vapidPublicKey"]
    assert created["config"] == {"subject": "mailto:ops@acme.example", "vapidPublicKey": public,
                                 "vapidPrivateKey": MASK}
    assert len(_b64url_decode(public)) == 65 and "=" not in public
    row = _row("push")
    assert row.config["vapidPrivateKey"].startswith("enc:v1:") and row.account_ref is None
    private = decrypted_account_config(row.user_id, "push")["vapidPrivateKey"]
    _assert_key_pair(private, public)
    assert public != PUBLIC_KEY

    # Browsers subscribed with that key: a replace that leaves the pair out keeps it, as does
    # sending back what GET showed.
    for config in ({"subject": "https://acme.example"}, created["config"]):
        kept = _put(client, headers, "push", config)
        assert kept["config"]["vapidPublicKey"] == public
        assert decrypted_account_config(row.user_id, "push")["vapidPrivateKey"] == private


def test_push_accepts_a_matching_pair_and_derives_a_missing_public_key(client, app_ctx):
    _, headers = signed_in(client)
    padded = {"vapidPublicKey": PUBLIC_KEY + "=" * (-len(PUBLIC_KEY) % 4),
              "vapidPrivateKey": PRIVATE_KEY + "=" * (-len(PRIVATE_KEY) % 4)}
    created = _put(client, headers, "push", CONFIGS["push"] | padded)
    assert created["config"]["vapidPublicKey"] == PUBLIC_KEY
    user_id = _row("push").user_id
    assert decrypted_account_config(user_id, "push")["vapidPrivateKey"] == PRIVATE_KEY

    other_private, other_public = vapid_keys()
    derived = _put(client, headers, "push", {"subject": "mailto:ops@acme.example", "vapidPrivateKey": other_private})
    assert derived["config"]["vapidPublicKey"] == other_public
    _assert_key_pair(decrypted_account_config(user_id, "push")["vapidPrivateKey"], other_public)


def test_push_mismatched_pair_is_rejected_and_changes_nothing(client, app_ctx):
    _, headers = signed_in(client)
    created = _put(client, headers, "push", CONFIGS["push"])
    other_private, other_public = vapid_keys()
    for config in (CONFIGS["push"] | {"vapidPrivateKey": other_private},
                   created["config"] | {"vapidPublicKey": other_public}):
        body = _put(client, headers, "push", config, status=422)
        assert set(body["errors"]["config"]) == {"vapidPublicKey"}
    assert client.get(f"{ACCOUNTS}/push", headers=headers).get_json() == created
    assert decrypted_account_config(_row("push").user_id, "push")["vapidPrivateKey"] == PRIVATE_KEY


def test_a_secret_is_required_when_no_account_exists(client, app_ctx):
    _, headers = signed_in(client)
    for config in ({"accountSid": ACCOUNT_SID, "fromNumber": "+14155550123"},
                   {"accountSid": ACCOUNT_SID, "fromNumber": "+14155550123", "authToken": MASK}):
        assert set(_put(client, headers, "sms", config, status=422)["errors"]["config"]) == {"authToken"}
    assert _row("sms") is None


def test_accounts_are_the_merchants_own(client, app_ctx):
    owner_tokens, owner = signed_in(client)
    stranger_tokens, stranger = signed_in(client)
    mine = {channel_type: _put(client, owner, channel_type, config) for channel_type, config in CONFIGS.items()}
    assert client.get(ACCOUNTS, headers=stranger).get_json() == []
    for channel_type in CONFIGS:
        assert client.get(f"{ACCOUNTS}/{channel_type}", headers=stranger).status_code == 404
        assert client.delete(f"{ACCOUNTS}/{channel_type}", headers=stranger).status_code == 404

    # The stranger's own accounts are theirs alone; the owner's stay as they were.
    theirs = _put(client, stranger, "push", {"subject": "mailto:me@stranger.example"})
    assert client.get(ACCOUNTS, headers=stranger).get_json() == [theirs]
    assert client.get(f"{ACCOUNTS}/push", headers=owner).get_json() == mine["push"]
    assert decrypted_account_config(_user_id(owner_tokens), "push")["vapidPrivateKey"] == PRIVATE_KEY
    assert decrypted_account_config(_user_id(stranger_tokens), "sms") is None
    assert {item["channelType"] for item in client.get(ACCOUNTS, headers=owner).get_json()} == set(CONFIGS)


@pytest.mark.parametrize("channel_type", ["sms", "whatsapp"])
def test_another_merchants_provider_account_cannot_be_claimed(client, app_ctx, channel_type):
    owner_tokens, owner = signed_in(client)
    _, stranger = signed_in(client)
    _put(client, owner, channel_type, CONFIGS[channel_type])
    ref_field = {"sms": "accountSid", "whatsapp": "phoneNumberId"}[channel_type]
    body = _put(client, stranger, channel_type, CONFIGS[channel_type], status=409)
    assert body["code"] == "conflict" and ref_field in body["errors"]["config"]
    assert client.get(ACCOUNTS, headers=stranger).get_json() == []
    assert account_by_ref(channel_type, REFS[channel_type])[0] == _user_id(owner_tokens)
    assert _row(channel_type, _user_id(owner_tokens)).config["accountSid" if channel_type == "sms" else "phoneNumberId"]


def test_lookups_return_the_decrypted_config(client, app_ctx):
    tokens, headers = signed_in(client)
    for channel_type, config in CONFIGS.items():
        _put(client, headers, channel_type, config)
    user_id = _user_id(tokens)
    assert decrypted_account_config(user_id, "sms") == CONFIGS["sms"]
    assert decrypted_account_config(user_id, "whatsapp") == CONFIGS["whatsapp"] | {"apiVersion": "v21.0"}
    assert decrypted_account_config(user_id, "push") == CONFIGS["push"]
    assert account_by_ref("sms", ACCOUNT_SID) == (user_id, CONFIGS["sms"])
    assert account_by_ref("whatsapp", REFS["whatsapp"]) == (user_id, decrypted_account_config(user_id, "whatsapp"))
    assert account_by_ref("sms", "AC" + "9" * 32) is None and account_by_ref("whatsapp", ACCOUNT_SID) is None


def test_routes_need_a_token(client, app_ctx):
    _, headers = signed_in(client)
    _put(client, headers, "sms", CONFIGS["sms"])
    assert client.get(ACCOUNTS).status_code == 401
    assert client.get(f"{ACCOUNTS}/sms").status_code == 401
    assert client.put(f"{ACCOUNTS}/sms", json={"config": CONFIGS["sms"]}).status_code == 401
    assert client.delete(f"{ACCOUNTS}/sms").status_code == 401
    assert _row("sms") is not None


def test_openapi_documents_the_routes(client, app_ctx):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"get", "put", "delete"} <= set(paths["/api/v1/provider-accounts/{channel_type}"])
    assert "get" in paths["/api/v1/provider-accounts"]


def test_concurrent_puts_neither_fail_nor_share_a_provider_account(app, live_client):
    """Competing first PUTs of one account, and two merchants claiming one Twilio account at once."""
    from concurrent.futures import ThreadPoolExecutor

    merchants = [signed_in(live_client)[1] for _ in range(4)]

    def put(headers: dict, config: dict) -> int:
        return app.test_client().put(f"{ACCOUNTS}/sms", headers=headers, json={"config": config}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        same_account = [pool.submit(put, merchants[0], CONFIGS["sms"] | {"fromNumber": number})
                        for number in ("+14155550123", "+14155550124", "+14155550125")]
        assert [future.result() for future in same_account] == [200, 200, 200]
        contested = [pool.submit(put, headers, CONFIGS["sms"] | {"accountSid": "AC" + "7" * 32})
                     for headers in merchants[1:]]
        assert sorted(future.result() for future in contested) == [200, 409, 409]
    with app.app_context():
        refs = db.session.scalars(sa.select(ProviderAccount.account_ref)).all()
    assert sorted(refs) == sorted([ACCOUNT_SID, "AC" + "7" * 32])
