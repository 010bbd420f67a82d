"""The messaging-provider emulators (Twilio, WhatsApp Cloud API, Web Push) over real HTTP.

No database: these tests drive the emulators with `requests` and, for Web Push, with pywebpush itself,
and receive callbacks/webhooks on a second local server.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests
from pywebpush import WebPushException, webpush
from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer
from tests.emulators.push_service import PushServiceEmulator, vapid_keys
from tests.emulators.twilio import (
    TwilioEmulator,
    twilio_signature,
    validate_twilio_signature,
)
from tests.emulators.whatsapp import WhatsAppEmulator, hub_signature

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "twilio-auth-token"
SENDER = "+15005550006"
WA_TOKEN = "wa-token"
APP_SECRET = "wa-app-secret"
VERIFY_TOKEN = "herald-verify"
SUB = "mailto:ops@herald.test"


class WebhookReceiver(EmulatorServer):
    """Stands in for Herald's callback endpoints: records calls, answers `status`, echoes Meta's challenge."""

    def __init__(self, status: int = 204) -> None:
        super().__init__()
        self.status = status

    def handle(self, request: Request) -> Response:
        if request.method == "GET":
            args = request.args
            if args.get("hub.mode") == "subscribe" and args.get("hub.verify_token") == VERIFY_TOKEN:
                return Response(args.get("hub.challenge", ""), 200, mimetype="text/plain")
            return Response("forbidden", 403)
        return Response(status=self.status)


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server
        assert server.server_errors == []


@pytest.fixture()
def twilio() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}, opted_out={"+15550001111"}) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture()
def whatsapp() -> Iterator[WhatsAppEmulator]:
    with WhatsAppEmulator(tokens={WA_TOKEN}, app_secret=APP_SECRET) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture()
def push() -> Iterator[PushServiceEmulator]:
    with PushServiceEmulator() as emulator:
        yield emulator
        assert emulator.server_errors == []


# -- Twilio -------------------------------------------------------------------------------------
def send_sms(emulator: TwilioEmulator, auth: tuple[str, str] = (ACCOUNT_SID, AUTH_TOKEN),
             **form: str) -> requests.Response:
    fields = {"To": "+14155550100", "From": SENDER, "Body": "Hello from Herald", **form}
    return requests.post(f"{emulator.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
                         data={k: v for k, v in fields.items() if v is not None}, auth=auth, timeout=5)


def test_twilio_signature_matches_twilio_reference_vectors() -> None:
    # The vectors of twilio-python's RequestValidator tests (including a repeated parameter).
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
              "Caller": "+14158675309"}
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert validate_twilio_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not validate_twilio_signature("wrong", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_twilio_send_returns_the_message_resource(twilio: TwilioEmulator) -> None:
    response = send_sms(twilio, StatusCallback="https://herald.test/hooks/twilio")
    assert response.status_code == 201
    message = response.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", message["sid"])
    assert (message["status"], message["to"], message["from"], message["body"]) == (
        "queued", "+14155550100", SENDER, "Hello from Herald")
    assert message["account_sid"] == ACCOUNT_SID and message["direction"] == "outbound-api"
    assert message["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message['sid']}.json"
    assert parsedate_to_datetime(message["date_created"]).utcoffset().total_seconds() == 0
    assert message["num_segments"] == "1"
    (recorded,) = twilio.messages
    assert recorded["status_callback"] == "https://herald.test/hooks/twilio"
    fetched = requests.get(twilio.base_url + message["uri"], auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert fetched.status_code == 200 and fetched.json() == message


def test_twilio_messaging_service_starts_accepted(twilio: TwilioEmulator) -> None:
    service = "MG" + "b2" * 16
    message = send_sms(twilio, From=None, MessagingServiceSid=service).json()
    assert (message["status"], message["from"], message["messaging_service_sid"]) == ("accepted", None, service)


def test_twilio_status_callback_is_signed(twilio: TwilioEmulator, receiver: WebhookReceiver) -> None:
    callback_url = f"{receiver.base_url}/hooks/twilio/status?tenant=7"
    sid = send_sms(twilio, StatusCallback=callback_url).json()["sid"]
    assert twilio.deliver_status(sid, "delivered") == 204
    assert twilio.deliver_status(sid, "undelivered", error_code=30003) == 204
    delivered, undelivered = receiver.requests
    assert delivered.path == "/hooks/twilio/status" and delivered.query == {"tenant": "7"}
    assert delivered.form["MessageSid"] == delivered.form["SmsSid"] == sid
    assert (delivered.form["MessageStatus"], delivered.form["SmsStatus"]) == ("delivered", "delivered")
    assert delivered.form["ApiVersion"] == "2010-04-01" and delivered.form["AccountSid"] == ACCOUNT_SID
    assert (delivered.form["From"], delivered.form["To"]) == (SENDER, "+14155550100")
    assert "ErrorCode" not in delivered.form and undelivered.form["ErrorCode"] == "30003"
    for call in (delivered, undelivered):  # recomputed exactly as the app must: full URL + POST params
        assert call.header("X-Twilio-Signature") == twilio_signature(AUTH_TOKEN, callback_url, call.form)
    assert twilio.message(sid)["status"] == "undelivered" and twilio.message(sid)["error_code"] == 30003
    assert [c["status_code"] for c in twilio.callbacks] == [204, 204]


def test_twilio_auto_callbacks_from_background_thread(receiver: WebhookReceiver) -> None:
    with TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}, auto_callbacks=["sent", "delivered"]) as twilio:
        sid = send_sms(twilio, StatusCallback=f"{receiver.base_url}/status").json()["sid"]
        callbacks = twilio.wait_for_callbacks(2)
        assert twilio.server_errors == []
    assert [c["status"] for c in callbacks] == ["sent", "delivered"]
    assert [r.form["MessageStatus"] for r in receiver.requests] == ["sent", "delivered"]
    assert all(r.form["MessageSid"] == sid for r in receiver.requests)


def test_twilio_bad_credentials_is_401(twilio: TwilioEmulator) -> None:
    for auth in ((ACCOUNT_SID, "wrong"), ("AC" + "0" * 32, AUTH_TOKEN)):
        response = send_sms(twilio, auth=auth)
        assert response.status_code == 401
        body = response.json()
        assert (body["code"], body["message"], body["status"]) == (20003, "Authenticate", 401)
        assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
    no_auth = requests.post(f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
                            data={"To": "+14155550100", "From": SENDER, "Body": "x"}, timeout=5)
    assert no_auth.status_code == 401
    assert twilio.messages == []


@pytest.mark.parametrize(("form", "code", "message"), [
    ({"To": "4155550100"}, 21211, "Invalid 'To' Phone Number: 4155550100"),
    ({"Body": None}, 21602, "Message body is required."),
    ({"To": "+15550001111"}, 21610, "Attempt to send to unsubscribed recipient"),
])
def test_twilio_rejects_invalid_sends(twilio: TwilioEmulator, form: dict[str, Any], code: int,
                                      message: str) -> None:
    response = send_sms(twilio, **form)
    assert response.status_code == 400
    assert response.json() == {"code": code, "message": message, "status": 400,
                               "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    assert twilio.messages == []


def test_twilio_opt_out_knob(twilio: TwilioEmulator) -> None:
    twilio.opt_out("+14155550100")
    assert send_sms(twilio).json()["code"] == 21610
    twilio.opt_in("+14155550100")
    assert send_sms(twilio).status_code == 201


def test_twilio_rate_limited_then_recovers(twilio: TwilioEmulator) -> None:
    twilio.rate_limit_next(1, retry_after=3)
    limited = send_sms(twilio)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["code"] == 20429
    assert send_sms(twilio).status_code == 201


# -- WhatsApp Cloud API ---------------------------------------------------------------------------
def template_message(**template: Any) -> dict[str, Any]:
    body = {"name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}], **template}
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+1 (415) 555-0100",
            "type": "template", "template": {k: v for k, v in body.items() if v is not None}}


def send_whatsapp(emulator: WhatsAppEmulator, payload: dict[str, Any], token: str = WA_TOKEN,
                  phone_number_id: str = "106540352242922") -> requests.Response:
    return requests.post(f"{emulator.base_url}/v21.0/{phone_number_id}/messages", json=payload,
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_whatsapp_sends_template(whatsapp: WhatsAppEmulator) -> None:
    response = send_whatsapp(whatsapp, template_message())
    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+1 (415) 555-0100", "wa_id": "14155550100"}]
    (message,) = body["messages"]
    assert message["id"].startswith("wamid.") and message["message_status"] == "accepted"
    (recorded,) = whatsapp.messages
    assert recorded["id"] == message["id"] and recorded["payload"]["template"]["name"] == "order_update"


def test_whatsapp_invalid_token_is_401(whatsapp: WhatsAppEmulator) -> None:
    response = send_whatsapp(whatsapp, template_message(), token="nope")
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("OAuthException", 190)
    assert error["message"] and error["fbtrace_id"]


@pytest.mark.parametrize(("payload", "code"), [
    (template_message(name=None), 131008),
    (template_message(language=None), 131008),
    ({**template_message(), "messaging_product": None}, 100),
])
def test_whatsapp_validation_errors(whatsapp: WhatsAppEmulator, payload: dict[str, Any], code: int) -> None:
    response = send_whatsapp(whatsapp, payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"].startswith(f"(#{code})")
    assert error["error_data"]["details"]
    assert whatsapp.messages == []


def test_whatsapp_template_registry() -> None:
    with WhatsAppEmulator(tokens={WA_TOKEN}, templates={"order_update": {"en_US": 2}}) as whatsapp:
        mismatch = send_whatsapp(whatsapp, template_message())
        assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (400, 132000)
        unknown = send_whatsapp(whatsapp, template_message(name="nope"))
        assert unknown.json()["error"]["code"] == 132001
        unknown_number = send_whatsapp(whatsapp, template_message(), phone_number_id="999")
        assert unknown_number.json()["error"]["code"] == 100


def test_whatsapp_rate_limits(whatsapp: WhatsAppEmulator) -> None:
    whatsapp.rate_limit_next(1)
    whatsapp.rate_limit_next(1, code=80007)
    first, second = send_whatsapp(whatsapp, template_message()), send_whatsapp(whatsapp, template_message())
    assert (first.status_code, first.json()["error"]["code"]) == (400, 130429)
    assert first.json()["error"]["message"] == "(#130429) Rate limit hit"
    assert (second.status_code, second.json()["error"]["code"]) == (400, 80007)
    assert send_whatsapp(whatsapp, template_message()).status_code == 200


def test_whatsapp_signed_status_webhooks(whatsapp: WhatsAppEmulator, receiver: WebhookReceiver) -> None:
    wamid = send_whatsapp(whatsapp, template_message()).json()["messages"][0]["id"]
    url = f"{receiver.base_url}/hooks/whatsapp"
    assert whatsapp.send_status(url, wamid, "delivered") == 204
    assert whatsapp.send_status(url, wamid, "failed", "14155550100") == 204
    delivered, failed = receiver.requests
    for call in (delivered, failed):  # the app must verify against the raw bytes it received
        expected = "sha256=" + hmac.new(APP_SECRET.encode(), call.body, hashlib.sha256).hexdigest()
        assert call.header("X-Hub-Signature-256") == expected == hub_signature(APP_SECRET, call.body)
    payload = json.loads(delivered.body)
    assert payload["object"] == "whatsapp_business_account"
    (change,) = payload["entry"][0]["changes"]
    assert change["field"] == "messages" and change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {"display_phone_number": "15550783881",
                                           "phone_number_id": "106540352242922"}
    (status,) = change["value"]["statuses"]
    assert (status["id"], status["status"], status["recipient_id"]) == (wamid, "delivered", "14155550100")
    assert int(status["timestamp"]) <= time.time() and status["pricing"]["billable"] is True
    failed_status = json.loads(failed.body)["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert failed_status["errors"][0]["code"] == 131026 and "pricing" not in failed_status
    assert whatsapp.messages[0]["status"] == "failed"


def test_whatsapp_challenge_helper(whatsapp: WhatsAppEmulator, receiver: WebhookReceiver) -> None:
    url = f"{receiver.base_url}/hooks/whatsapp"
    assert whatsapp.verify_challenge(url, VERIFY_TOKEN, challenge="1158201444") == (200, "1158201444")
    status, body = whatsapp.verify_challenge(url, VERIFY_TOKEN)
    assert status == 200 and body.isdigit()
    assert whatsapp.verify_challenge(url, "wrong-token")[0] == 403


# -- Web Push -----------------------------------------------------------------------------------
def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": SUB, **extra}  # a fresh dict each time: pywebpush fills in aud/exp in place


def test_push_round_trip_with_pywebpush(push: PushServiceEmulator) -> None:
    private_key, _public_key = vapid_keys()
    subscription = push.new_subscription()
    assert subscription["endpoint"].startswith(f"{push.base_url}/push/")
    data = json.dumps({"title": "Spring sale", "body": "20% off — today only"})
    response = webpush(subscription, data, vapid_private_key=private_key, vapid_claims=claims(), ttl=3600)
    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{push.base_url}/m/") and response.headers["TTL"] == "3600"
    (received,) = push.received_for(subscription)
    assert received["plaintext"] == data.encode()
    assert received["headers"]["Content-Encoding"] == "aes128gcm" and received["ttl"] == 3600
    assert received["vapid"]["sub"] == SUB and received["vapid"]["aud"] == push.base_url
    assert requests.delete(response.headers["Location"], timeout=5).status_code == 204


def test_push_restricted_subscription_checks_the_key(push: PushServiceEmulator) -> None:
    private_key, public_key = vapid_keys()
    other_private, _ = vapid_keys()
    subscription = push.new_subscription(application_server_key=public_key)
    assert webpush(subscription, "hi", vapid_private_key=private_key, vapid_claims=claims()).status_code == 201
    with pytest.raises(WebPushException) as wrong_key:
        webpush(subscription, "hi", vapid_private_key=other_private, vapid_claims=claims())
    assert wrong_key.value.response.status_code == 403


@pytest.mark.parametrize("bad_claims", [
    claims(aud="https://fcm.googleapis.com"),
    claims(exp=int(time.time()) + 2 * 24 * 3600),
])
def test_push_rejects_invalid_vapid(push: PushServiceEmulator, bad_claims: dict[str, Any]) -> None:
    private_key, _ = vapid_keys()
    with pytest.raises(WebPushException) as rejected:
        webpush(push.new_subscription(), "hi", vapid_private_key=private_key, vapid_claims=dict(bad_claims))
    assert rejected.value.response.status_code == 403
    assert rejected.value.response.json()["errno"] == 109
    assert push.received == []


def test_push_without_vapid_is_401(push: PushServiceEmulator) -> None:
    with pytest.raises(WebPushException) as rejected:
        webpush(push.new_subscription(), "hi")
    assert rejected.value.response.status_code == 401
    assert rejected.value.response.headers["WWW-Authenticate"] == "vapid"


def test_push_gone_and_not_found(push: PushServiceEmulator) -> None:
    private_key, _ = vapid_keys()
    gone, missing = push.new_subscription(), push.new_subscription()
    push.gone(gone)
    push.not_found(missing["endpoint"])
    for subscription, status in ((gone, 410), (missing, 404)):
        with pytest.raises(WebPushException) as rejected:
            webpush(subscription, "hi", vapid_private_key=private_key, vapid_claims=claims())
        assert rejected.value.response.status_code == status


def test_push_payload_encrypted_for_other_keys_is_rejected(push: PushServiceEmulator) -> None:
    private_key, _ = vapid_keys()
    subscription, stranger = push.new_subscription(), push.new_subscription()
    crossed = {"endpoint": subscription["endpoint"], "keys": stranger["keys"]}
    with pytest.raises(WebPushException) as rejected:
        webpush(crossed, "secret", vapid_private_key=private_key, vapid_claims=claims())
    assert rejected.value.response.status_code == 400 and rejected.value.response.json()["errno"] == 110


def test_push_protocol_checks_and_rate_limit() -> None:
    with PushServiceEmulator(require_vapid=False) as push:
        endpoint = push.new_subscription()["endpoint"]
        no_ttl = requests.post(endpoint, timeout=5)
        assert (no_ttl.status_code, no_ttl.json()["errno"]) == (400, 111)
        bad_urgency = requests.post(endpoint, headers={"TTL": "60", "Urgency": "urgent"}, timeout=5)
        assert bad_urgency.status_code == 400
        too_big = requests.post(endpoint, data=b"x" * 5000, headers={"TTL": "60", "Content-Encoding": "aes128gcm"},
                                timeout=5)
        assert too_big.status_code == 413
        push.rate_limit_next(1, retry_after=7)
        limited = requests.post(endpoint, headers={"TTL": "60"}, timeout=5)
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
        tickle = requests.post(endpoint, headers={"TTL": "60"}, timeout=5)  # payload-less push (RFC 8030)
        assert tickle.status_code == 201 and push.received[0]["plaintext"] == b""
        assert push.server_errors == []
