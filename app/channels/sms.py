"""SMS through the merchant's Twilio account (any Twilio-compatible REST API), and Twilio's signed
status callbacks.

What `send` says about a message (`POST /2010-04-01/Accounts/{sid}/Messages.json`):
- 200/201: `SendOutcome(accepted=True)` with the Message SID; delivery is confirmed later by a
  status callback (verified by `callback_signed`, read by `parse_status_callback`,
  applied by app.services.receipts).
- 429 (or 21611, the sender's queue is full): `SendOutcome(accepted=False, retry_after=...)`. The
  engine hands the row back to the queue and waits before taking more.
- 400 with 21610 (the recipient texted STOP): not accepted, `opted_out=True`: the contact's SMS
  consent becomes `unsubscribed`. Any other 4xx about the message (21211 invalid number, ...):
  not accepted, "Twilio error {code}: {message}".
- raises `ProviderUnavailable`: nothing was handed over, so the row can be sent later: no
  connection (refused, DNS, TLS, connect timeout), an answer about the account rather than the
  message (401/403/404: every message would get it; the rows wait until the account is fixed), or
  the body's links could not be stored.
- raises `SmsOutcomeUnknown`: the request went out but no definite answer came back (a read
  timeout, a dropped connection, a 5xx). Twilio's Messages API has no idempotency key, so a 5xx
  may hide a created message: resending could text the contact twice, so the engine records the
  row `unknown` and never resends it. After a few of those in a row the sender stops trying
  (`ProviderUnavailable`), so an outage costs a few unknown rows, not the rest of the campaign.

URLs in the body go out as short tracked links (app.services.short_links).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from sqlalchemy.exc import SQLAlchemyError

from app.channels.base import (
    HttpSender,
    OutgoingMessage,
    ProviderUnavailable,
    Receipt,
    Refused,
    SendOutcome,
    UnsupportedChannel,
    never_reached,
    retry_after,
)
from app.config import Settings
from app.services.rendering import render
from app.services.short_links import ShortLinks

STATUS_CALLBACK_PATH = "/hooks/twilio/status"
TIMEOUTS = (5.0, 20.0)  # (connect, read) seconds: Twilio answers a create in well under a second
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After
QUEUE_FULL_RETRY_AFTER = 30.0  # 21611: hours of messages already queued on the sender
UNKNOWN_IN_A_ROW_LIMIT = 3
OPTED_OUT = 21610
QUEUE_FULL = 21611
# Answers about the account, not the message (credentials, permissions, a wrong base URL).
ACCOUNT_REFUSALS = (401, 403, 404)
# MessageStatus → the ledger's receipt; queued, accepted, sending, sent, ... change nothing.
RECEIPTS = {"delivered": "delivered", "read": "read", "undelivered": "failed", "failed": "failed"}


class SmsOutcomeUnknown(Exception):
    """The request reached Twilio (or may have) without a definite answer: never resend it."""


def status_callback_url(settings: Settings) -> str:
    """Where Twilio reports a message's status; also the URL its callbacks are signed over."""
    return f"{settings.public_base_url}{STATUS_CALLBACK_PATH}"


class SmsSender(HttpSender):
    """ChannelSender for SMS: one HTTP session per sending thread."""

    def __init__(self, config: Mapping[str, Any], settings: Settings) -> None:
        missing = [name for name in ("accountSid", "authToken") if not config.get(name)]
        if not (config.get("fromNumber") or config.get("messagingServiceSid")):
            missing.append("fromNumber or messagingServiceSid")
        if missing:
            raise UnsupportedChannel(f"The SMS provider account lacks {', '.join(missing)}.")
        super().__init__()
        account_sid = config["accountSid"]
        base_url = settings.api_base_urls["TWILIO_API_BASE_URL"]
        self._url = f"{base_url}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"
        self._auth = (account_sid, config["authToken"])
        # A Messaging Service picks the sending number from its pool; otherwise our one number sends.
        service = config.get("messagingServiceSid")
        self._sender = ("MessagingServiceSid", service) if service else ("From", config["fromNumber"])
        self._status_callback = status_callback_url(settings)
        self._unknown_in_a_row = 0  # across threads: a plain int is enough for "a few in a row"
        self._short_links = ShortLinks("sms", settings)

    def prepare(self, message: OutgoingMessage) -> dict[str, str]:
        try:
            body = render(message.config.get("body") or "", message.contact, event=message.event)
        except Exception as exc:
            raise Refused(f"template error: {type(exc).__name__}: {exc}") from exc
        if not body.strip():
            raise Refused("The message body is empty for this contact.")
        try:
            body = self._short_links.shorten(message, body)
        except SQLAlchemyError as exc:
            raise ProviderUnavailable("could not store the message's links") from exc
        sender_field, sender = self._sender
        return {"To": message.address, sender_field: sender, "Body": body, "StatusCallback": self._status_callback}

    def transmit(self, prepared: dict[str, str]) -> SendOutcome:
        if self._unknown_in_a_row >= UNKNOWN_IN_A_ROW_LIMIT:
            raise ProviderUnavailable("Twilio gave no definite answer to the last messages; the rest wait.")
        return _outcome(self._post(prepared))

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self._auth
        session.headers["User-Agent"] = "Herald"
        # requests re-reads proxy and CA settings from the environment on every request (a
        # measurable share of a send); the URL is the same for the whole run, so read them once.
        environment = session.merge_environment_settings(self._url, {}, None, None, None)
        session.proxies, session.verify = environment["proxies"], environment["verify"]
        session.trust_env = False
        return session

    def _post(self, form: dict[str, str]) -> requests.Response:
        """Twilio's answer, when it is a definite one (2xx or 4xx)."""
        try:
            with self._sessions.connection() as session:
                response = session.post(self._url, data=form, timeout=TIMEOUTS, allow_redirects=False)
        except requests.RequestException as exc:
            if never_reached(exc):
                raise ProviderUnavailable(f"Cannot reach Twilio at {urlsplit(self._url).netloc}: {exc}") from exc
            self._unknown_in_a_row += 1
            raise SmsOutcomeUnknown(f"No answer from Twilio: {exc}") from exc
        if response.status_code // 100 not in (2, 4):  # a 5xx may hide a created message
            self._unknown_in_a_row += 1
            raise SmsOutcomeUnknown(_error(response)[1])
        self._unknown_in_a_row = 0
        return response


def _outcome(response: requests.Response) -> SendOutcome:
    status = response.status_code
    if status < 300:
        return SendOutcome(accepted=True, provider_message_id=_json(response).get("sid"))
    code, text = _error(response)
    if status in ACCOUNT_REFUSALS:
        raise ProviderUnavailable(f"Twilio refused the account: HTTP {status}: {text}")
    if status == 429 or code == QUEUE_FULL:
        wait = retry_after(response.headers, DEFAULT_RETRY_AFTER) if status == 429 else QUEUE_FULL_RETRY_AFTER
        return SendOutcome(accepted=False, retry_after=wait, error=text)
    return SendOutcome(accepted=False, opted_out=code == OPTED_OUT, error=text)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error(response: requests.Response) -> tuple[int | None, str]:
    """Twilio's error code and "Twilio error {code}: {message}" from its error envelope."""
    payload = _json(response)
    code = payload.get("code")
    if not isinstance(code, int):
        return None, f"Twilio answered HTTP {response.status_code}."
    return code, f"Twilio error {code}: {payload.get('message') or 'no message'}"


# --- Status callbacks --------------------------------------------------------------------------

def request_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each name and value, sorted
    by name)); a repeated name contributes each distinct value, sorted (as twilio-python does)."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def callback_signed(auth_token: str | None, url: str, params: Iterable[tuple[str, str]], signature: str | None) -> bool:
    """Whether a callback is signed with this auth token over the URL we gave Twilio."""
    if not (auth_token and signature):
        return False
    expected = request_signature(auth_token, url, params).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def parse_status_callback(form: Mapping[str, str]) -> list[Receipt]:
    """The receipt a status callback carries (queued, accepted, sending, sent, ... carry none)."""
    status = form.get("MessageStatus", "")
    receipt, message_sid = RECEIPTS.get(status), form.get("MessageSid") or form.get("SmsSid")
    if receipt is None or not message_sid:
        return []
    code = form.get("ErrorCode")
    error = f"Twilio error {code}: message {status}" if code else f"Twilio: message {status}"
    return [Receipt(message_sid, receipt, error if receipt == "failed" else None)]
