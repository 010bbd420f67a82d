"""Emulator of Twilio's Programmable Messaging REST API (2010-04-01) and its message status callbacks.

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`        create (send) a Message, form-encoded
- `GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`  fetch a Message

Requests authenticate with HTTP basic `AccountSid:AuthToken`. Errors use Twilio's envelope
`{"code", "message", "more_info", "status"}`. Status callbacks are form POSTs to the message's
`StatusCallback` URL, signed with `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + each
param name and value, sorted by name)).

Sources for the formats: twilio.com/docs/messaging/api/message-resource, "Outbound Message Status in
Status Callbacks", "Secure webhooks", the error pages (20003, 20429, 21211, 21602, 21610) and the
reference vectors in twilio-python's RequestValidator tests.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "twilio_test_auth_token"
MAX_BODY_CHARS = 1600
FINAL_FAILURES = ("failed", "undelivered")
ERROR_MESSAGES = {30003: "Unreachable destination handset", 30005: "Unknown destination handset",
                  30006: "Landline or unreachable carrier", 30007: "Message filtered", 30008: "Unknown error"}

_CREATE = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")
_FETCH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json")
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
# GSM-7 basic alphabet; the extension table's characters cost two septets each.
_GSM7 = frozenset("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXT = frozenset("^{}\\[~]|€\f")

Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


# -- signatures --------------------------------------------------------------------------------
def twilio_signature(auth_token: str, url: str, params: Params) -> str:
    """Twilio's documented request signature: base64(HMAC-SHA1(token, url + sorted name+value pairs)).

    Like twilio-python's RequestValidator, repeated parameters contribute each distinct value, sorted.
    """
    payload = url + "".join(name + value for name, value in _sorted_pairs(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def validate_twilio_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(twilio_signature(auth_token, url, params), signature)


def _sorted_pairs(params: Params) -> list[tuple[str, str]]:
    grouped: dict[str, set[str]] = {}
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        grouped.setdefault(name, set()).update(values)
    return [(name, value) for name in sorted(grouped) for value in sorted(grouped[name])]


# -- response helpers --------------------------------------------------------------------------
def twilio_error(code: int, message: str, status: int = 400, headers: dict[str, str] | None = None,
                 **extra: Any) -> Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status, **extra}
    return json_response(body, status, headers)


def rfc2822(moment: datetime | None = None) -> str:
    """Twilio's resource timestamps, e.g. `Thu, 30 Jul 2015 20:12:31 +0000`."""
    return format_datetime((moment or datetime.now(UTC)).astimezone(UTC))


def segment_count(body: str) -> int:
    """SMS segments: GSM-7 fits 160 septets (153 when split), otherwise UCS-2 fits 70 (67 when split)."""
    if all(ch in _GSM7 or ch in _GSM7_EXT for ch in body):
        units, single, multi = sum(2 if ch in _GSM7_EXT else 1 for ch in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / multi)


class TwilioEmulator(EmulatorServer):
    """Accepts outbound messages, records them, and (on request) calls their StatusCallback back, signed."""

    def __init__(self, accounts: Mapping[str, str] | None = None, *, opted_out: Iterable[str] = (),
                 auto_callbacks: Sequence[str] = (), callback_delay: float = 0.05,
                 service_sender: str = "+15005550006") -> None:
        super().__init__()
        self.accounts: dict[str, str] = dict(accounts or {DEFAULT_ACCOUNT_SID: DEFAULT_AUTH_TOKEN})
        self.opted_out: set[str] = set(opted_out)
        self.auto_callbacks: list[str] = list(auto_callbacks)
        # Real callbacks race the 201; a short delay lets the app store the SID before it is called back.
        self.callback_delay = callback_delay
        self.service_sender = service_sender  # the number a Messaging Service "picks" from its pool
        self._messages: dict[str, dict[str, Any]] = {}
        self._status_callbacks: dict[str, str] = {}
        self._callbacks: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    # -- knobs and assertions ------------------------------------------------------------------
    def opt_out(self, number: str) -> None:
        """The recipient texted STOP: further sends to it fail with 21610."""
        with self.lock:
            self.opted_out.add(number)

    def opt_in(self, number: str) -> None:
        with self.lock:
            self.opted_out.discard(number)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages, oldest first: the Message resource plus the `status_callback` URL given."""
        with self.lock:
            return [{**copy.deepcopy(m), "status_callback": self._status_callbacks.get(sid)}
                    for sid, m in self._messages.items()]

    def message(self, sid: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._messages[sid])

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """Status callbacks sent: `{sid, status, url, params, signature, status_code, error}`."""
        with self.lock:
            return copy.deepcopy(self._callbacks)

    def wait_for_callbacks(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until `count` callbacks were attempted (auto callbacks run on background threads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.callbacks) >= count:
                return self.callbacks
            time.sleep(0.01)
        raise TimeoutError(f"expected {count} status callbacks, saw {len(self.callbacks)}")

    def stop(self) -> None:
        for thread in list(self._threads):
            thread.join(timeout=5)
        super().stop()

    # -- status callbacks ----------------------------------------------------------------------
    def deliver_status(self, sid: str, status: str, error_code: int | None = None) -> int | None:
        """Move message `sid` to `status` and POST the signed callback; returns the receiver's HTTP status.

        failed/undelivered without an explicit `error_code` report 30008 (Unknown error), as Twilio always
        names a cause for those. Returns None when the receiver could not be reached.
        """
        if status in FINAL_FAILURES and error_code is None:
            error_code = 30008
        url, params, token = self._advance(sid, status, error_code)
        headers = {"X-Twilio-Signature": twilio_signature(token, url, params), "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
        record: dict[str, Any] = {"sid": sid, "status": status, "url": url, "params": params,
                                  "signature": headers["X-Twilio-Signature"], "status_code": None, "error": None}
        try:
            record["status_code"] = requests.post(url, data=params, headers=headers, timeout=5).status_code
        except requests.RequestException as exc:  # the app being down is a result to assert on, not a crash
            record["error"] = repr(exc)
        with self.lock:
            self._callbacks.append(record)
        return record["status_code"]

    def _advance(self, sid: str, status: str, error_code: int | None) -> tuple[str, dict[str, str], str]:
        with self.lock:
            message = self._messages[sid]
            url = self._status_callbacks.get(sid)
            if url is None:
                raise ValueError(f"message {sid} was sent without a StatusCallback")
            now = rfc2822()
            message.update(status=status, date_updated=now, error_code=error_code,
                           error_message=ERROR_MESSAGES.get(error_code or 0))
            message["from"] = message["from"] or self.service_sender
            if status == "sent" and message["date_sent"] is None:
                message["date_sent"] = now
            return url, _callback_params(message, status, error_code), self.accounts[message["account_sid"]]

    def _schedule_auto_callbacks(self, sid: str) -> None:
        thread = threading.Thread(target=self._run_auto_callbacks, args=(sid, list(self.auto_callbacks)),
                                  name=f"twilio-callbacks-{sid}", daemon=True)
        with self.lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _run_auto_callbacks(self, sid: str, statuses: list[str]) -> None:
        try:
            for status in statuses:
                time.sleep(self.callback_delay)
                self.deliver_status(sid, status)
        except Exception:  # noqa: BLE001 — a bug here must fail the test through server_errors, not vanish with the thread
            with self.lock:
                self.server_errors.append(traceback.format_exc())

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        create, fetch = _CREATE.fullmatch(request.path), _FETCH.fullmatch(request.path)
        match = create or fetch
        if match is None:
            return _not_found(request.path)
        denied = self._authenticate(request, match["account"])
        if denied is not None:
            return denied
        if create and request.method == "POST":
            return self._create(match["account"], request.form.to_dict())
        if fetch and request.method == "GET":
            with self.lock:
                message = self._messages.get(match["sid"])
                if message is None or message["account_sid"] != match["account"]:
                    return _not_found(request.path)
                return json_response(message)
        return twilio_error(20004, "Method not allowed", 405)

    def _authenticate(self, request: Request, account: str) -> Response | None:
        auth = request.authorization
        valid = (auth is not None and auth.type == "basic" and auth.username == account
                 and self.accounts.get(account) is not None and auth.password == self.accounts[account])
        if valid:
            return None
        return twilio_error(20003, "Authenticate", 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'},
                            detail="Your AccountSid or AuthToken was incorrect.")

    def _create(self, account: str, form: dict[str, str]) -> Response:
        with self.lock:
            problem = self._validate(form)
            if problem is not None:
                return problem
            message = _new_message(account, form)
            self._messages[message["sid"]] = message
            if form.get("StatusCallback"):
                self._status_callbacks[message["sid"]] = form["StatusCallback"]
            answer = json_response(message, 201)
        if form.get("StatusCallback") and self.auto_callbacks:
            self._schedule_auto_callbacks(message["sid"])
        return answer

    def _validate(self, form: dict[str, str]) -> Response | None:
        to, sender, service = form.get("To", ""), form.get("From", ""), form.get("MessagingServiceSid", "")
        if not to:
            return twilio_error(21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to):
            return twilio_error(21211, f"Invalid 'To' Phone Number: {to}")
        if not sender and not service:
            return twilio_error(21603, "A 'From' phone number is required.")
        if sender and not (_E164.fullmatch(sender) or _ALPHA_SENDER.fullmatch(sender)):
            return twilio_error(21212, f"Invalid 'From' Phone Number: {sender}")
        if service and not re.fullmatch(r"MG[0-9a-f]{32}", service):
            return twilio_error(21701, f"The Messaging Service Sid {service} is invalid.")
        if not form.get("Body") and not form.get("MediaUrl"):
            return twilio_error(21602, "Message body is required.")
        if len(form.get("Body", "")) > MAX_BODY_CHARS:
            return twilio_error(21617, "The concatenated message body exceeds the 1600 character limit.")
        if to in self.opted_out:
            return twilio_error(21610, "Attempt to send to unsubscribed recipient")
        return None

    def rate_limited_response(self, retry_after: float) -> Response:
        # Retry-After in whole seconds (RFC 9110 delay-seconds), which every HTTP client can parse.
        return twilio_error(20429, "Too Many Requests", 429, {"Retry-After": str(math.ceil(retry_after))})

    def server_error_response(self, status: int) -> Response:
        return twilio_error(20500, "An internal server error has occurred", status)


def _new_message(account: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    service = form.get("MessagingServiceSid") or None
    uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"
    now = rfc2822()
    body = form.get("Body", "")
    return {
        "account_sid": account, "api_version": API_VERSION, "body": body,
        "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
        "error_code": None, "error_message": None, "from": form.get("From") or None,
        "messaging_service_sid": service, "num_media": "1" if form.get("MediaUrl") else "0",
        "num_segments": str(segment_count(body)), "price": None, "price_unit": "USD", "sid": sid,
        # Documented initial status: "accepted" through a Messaging Service, otherwise "queued".
        "status": "accepted" if service else "queued",
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"}, "to": form["To"], "uri": uri,
    }


def _callback_params(message: dict[str, Any], status: str, error_code: int | None) -> dict[str, str]:
    params = {"AccountSid": message["account_sid"], "ApiVersion": API_VERSION, "From": message["from"],
              "MessageSid": message["sid"], "MessageStatus": status, "SmsSid": message["sid"],
              "SmsStatus": status, "To": message["to"]}
    if message["messaging_service_sid"]:
        params["MessagingServiceSid"] = message["messaging_service_sid"]
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    if status == "delivered":
        params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
    return params


def _not_found(path: str) -> Response:
    return twilio_error(20404, f"The requested resource {path} was not found", 404)
