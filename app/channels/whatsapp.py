"""WhatsApp through Meta's Cloud API: approved template messages out, signed status webhooks in.

A merchant's account config: `{"phoneNumberId", "accessToken" (secret), "apiVersion" (default
v21.0), "businessAccountId"?}`. Messages go to `POST {WHATSAPP_API_BASE_URL}/{apiVersion}/
{phoneNumberId}/messages` with the token as a bearer, one HTTP session per batch.

What `send` says about a message (Graph error codes from Meta's "Cloud API error codes" page):
- accepted, not delivered: Meta took it; `provider_message_id` is its wamid. Delivery and reads
  arrive later as status webhooks (`signature_valid`, `parse_status_webhook`; applied by
  app.services.receipts).
- not accepted, `retry_after` set: throttled (codes 4, 80007, 130429, 131056, or HTTP 429). Nothing
  was sent; the engine puts the row back in the queue and holds this sender for the wait itself
  (app/services/sending.py sleeps `retry_after`, bounded), so the sender only computes the wait:
  Retry-After when given, else a backoff that doubles while throttles follow each other.
- not accepted, `opted_out`: 131050, the recipient stopped marketing messages from this business.
- not accepted, `error`: any other Graph error (131026 undeliverable, a broken template, ...).
  Errors about the account, token or template (190 and the rest of `BATCH_WIDE_CODES`) would come
  back for every message: the rest of the batch gets the same answer without asking Meta again.
- raises `WhatsAppUnavailable` (a ProviderUnavailable): no connection could be opened (refused,
  DNS, connect timeout, TLS handshake), or the message's links could not be stored; the request
  never left, so it is safe to send later.
- raises `WhatsAppOutcomeUnknown`: the request went out but no usable answer came back (read
  timeout, a dropped connection, a 5xx, a 2xx without a message id). Meta may have taken it.

URLs in the template's parameters go out as short tracked links (app.services.short_links).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
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
from app.errors import HeraldError
from app.services.rendering import render
from app.services.short_links import ShortLinks

DEFAULT_API_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
THROTTLE_CODES = frozenset({4, 80007, 130429, 131056})
PAIR_THROTTLE = 131056  # Meta allows about one message per 6 s to the same recipient
PAIR_WAIT = 6.0
FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0
OPTED_OUT_CODES = frozenset({131050})
# Token, permission, account, payment and template errors: the same for every message of a batch.
BATCH_WIDE_CODES = frozenset({0, 3, 10, 190, 368, 131031, 131042, 132000, 132001, 132015, 132016})
PERMISSION_CODES = range(200, 300)
UNKNOWN_OBJECT_SUBCODE = 33  # code 100: the phone number id does not exist or is not ours
MESSAGE_ID_MAX = 512
_VERSION = re.compile(r"v\d{1,3}\.\d{1,3}")
_CODE_PREFIX = re.compile(r"^\(#\d+\)\s*")


class WhatsAppUnavailable(ProviderUnavailable):
    """The Cloud API could not be reached; the message never left."""


class WhatsAppOutcomeUnknown(Exception):
    """The request went out without a usable answer: Meta may have the message. Do not resend."""


def recipient(address: str) -> str:
    """`+` and the digits: Meta prepends the business number's country code to a number sent
    without the plus sign ("WhatsApp user phone number formats"), which can reach a stranger."""
    digits = re.sub(r"\D", "", address or "")
    if not digits:
        raise Refused(f"not a phone number: {address!r}")
    return f"+{digits}"


def _parameter(source: str, message: OutgoingMessage, position: int) -> dict[str, str]:
    try:
        rendered = render(source, message.contact, event=message.event)
    except Exception as exc:  # e.g. arithmetic on one contact's attribute: fails this message only
        raise Refused(f"template error in parameter {position}: {type(exc).__name__}: {exc}") from exc
    # Meta refuses body parameters with line breaks, tabs or runs of more than four spaces (132018).
    text = " ".join(rendered.split())
    if not text:
        raise Refused(f"parameter {position} is empty for this contact")
    return {"type": "text", "text": text}


def template_message(message: OutgoingMessage) -> dict[str, Any]:
    """The Cloud API body of the channel's template message for one contact."""
    config = message.config
    template: dict[str, Any] = {"name": config["templateName"], "language": {"code": config["language"]}}
    parameters = [_parameter(source, message, position)
                  for position, source in enumerate(config.get("parameters") or [], start=1)]
    if parameters:
        template["components"] = [{"type": "body", "parameters": parameters}]
    return {"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": recipient(message.address), "type": "template", "template": template}


def describe_error(code: Any, text: Any, details: str | None = None) -> str:
    """One line for the ledger; Graph's `message` repeats the code as "(#130429) ...", dropped here."""
    title = _CODE_PREFIX.sub("", text) if isinstance(text, str) else ""
    summary = f"WhatsApp error {code}: {title or 'no message'}"
    return f"{summary} ({details})" if details and details not in summary else summary


def _details(error: dict[str, Any]) -> str | None:
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    return details if isinstance(details, str) else None


def _graph_error(response: requests.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _batch_wide(error: dict[str, Any]) -> bool:
    code = error.get("code")
    return (code in BATCH_WIDE_CODES or code in PERMISSION_CODES
            or (code == 100 and error.get("error_subcode") == UNKNOWN_OBJECT_SUBCODE))


class WhatsAppSender(HttpSender):
    """ChannelSender for WhatsApp: one HTTP session per sending thread."""

    def __init__(self, config: dict[str, Any], settings: Settings) -> None:
        phone_number_id, token = str(config.get("phoneNumberId") or ""), config.get("accessToken") or ""
        version = config.get("apiVersion") or DEFAULT_API_VERSION
        if not phone_number_id or not token or not _VERSION.fullmatch(version):
            raise UnsupportedChannel("The WhatsApp account needs a phoneNumberId, an accessToken and "
                                     "an apiVersion such as v21.0.")
        super().__init__()
        base = settings.api_base_urls.get("WHATSAPP_API_BASE_URL") or DEFAULT_API_BASE_URL
        self._url = f"{base.rstrip('/')}/{version}/{quote(phone_number_id, safe='')}/messages"
        self._token = token
        self._refusal: SendOutcome | None = None  # a batch-wide error, once seen
        self._throttles = 0  # consecutive throttled answers
        self._short_links = ShortLinks("whatsapp", settings)

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self._token}"
        return session

    def prepare(self, message: OutgoingMessage) -> dict[str, Any]:
        body = template_message(message)
        try:
            for component in body["template"].get("components", []):
                for parameter in component["parameters"]:
                    parameter["text"] = self._short_links.shorten(message, parameter["text"])
        except SQLAlchemyError as exc:
            raise WhatsAppUnavailable("could not store the message's links") from exc
        return body

    def transmit(self, prepared: dict[str, Any]) -> SendOutcome:
        if self._refusal is not None:
            return self._refusal
        return self._outcome(self._post(prepared))

    def _post(self, body: dict[str, Any]) -> requests.Response:
        try:
            with self._sessions.connection() as session:
                return session.post(self._url, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            if never_reached(exc):
                raise WhatsAppUnavailable(f"cannot reach the WhatsApp Cloud API: {exc}") from exc
            raise WhatsAppOutcomeUnknown(f"no answer from the WhatsApp Cloud API: {exc}") from exc

    def _outcome(self, response: requests.Response) -> SendOutcome:
        if response.status_code >= 500:
            raise WhatsAppOutcomeUnknown(f"the WhatsApp Cloud API answered {response.status_code}")
        if response.ok:
            return self._accepted(response)
        error = _graph_error(response)
        code = error.get("code")
        description = describe_error(code or f"HTTP {response.status_code}", error.get("message"), _details(error))
        if response.status_code == 429 or code in THROTTLE_CODES:
            return SendOutcome(accepted=False, error=description, retry_after=self._wait(response, code))
        outcome = SendOutcome(accepted=False, error=description, opted_out=code in OPTED_OUT_CODES,
                              details={"code": code})
        if _batch_wide(error):
            self._refusal = outcome
        return outcome

    def _accepted(self, response: requests.Response) -> SendOutcome:
        try:
            wamid = response.json()["messages"][0]["id"]
        except (ValueError, LookupError, TypeError) as exc:
            raise WhatsAppOutcomeUnknown("the WhatsApp Cloud API accepted without a message id") from exc
        self._throttles = 0
        return SendOutcome(accepted=True, delivered=False, provider_message_id=str(wamid))

    def _wait(self, response: requests.Response, code: Any) -> float:
        self._throttles += 1
        given = retry_after(response.headers, None)
        if given is not None:
            return min(given, LONGEST_WAIT)
        if code == PAIR_THROTTLE:
            return PAIR_WAIT
        return min(FIRST_WAIT * 2 ** (self._throttles - 1), LONGEST_WAIT)


# --- Status webhooks -----------------------------------------------------------------------------

def signature_valid(raw_body: bytes, header: str | None, app_secret: str) -> bool:
    """`X-Hub-Signature-256` is `sha256=` + hex HMAC-SHA256 of the raw body with the app secret."""
    if not app_secret or not header:
        return False
    expected = "sha256=" + hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


def subscription_valid(mode: str | None, verify_token: str | None, configured: str) -> bool:
    """Meta's subscription handshake: `subscribe` with the configured token (never an empty one)."""
    if mode != "subscribe" or not configured or verify_token is None:
        return False
    return hmac.compare_digest(configured.encode(), verify_token.encode("utf-8", "replace"))


def parse_status_webhook(raw_body: bytes) -> list[Receipt]:
    """Every message status the (verified) webhook carries; raises HeraldError for a body that is
    not JSON. `sent` adds nothing: the row is `sent` from the moment the Cloud API accepted it."""
    try:
        payload = orjson.loads(raw_body)
    except orjson.JSONDecodeError as exc:
        raise HeraldError("The body is not valid JSON.") from exc
    return [receipt for status in _statuses(payload) if (receipt := _receipt(status)) is not None]


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _statuses(payload: Any) -> Iterator[dict[str, Any]]:
    """Every status of every change of every entry; inbound messages and other fields are ignored."""
    entries = _objects(payload.get("entry")) if isinstance(payload, dict) else []
    for change in (change for entry in entries for change in _objects(entry.get("changes"))):
        value = change.get("value")
        if change.get("field") == "messages" and isinstance(value, dict):
            yield from _objects(value.get("statuses"))


def _receipt(status: dict[str, Any]) -> Receipt | None:
    message_id, state = status.get("id"), status.get("status")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MESSAGE_ID_MAX:
        return None
    if state in ("delivered", "read"):
        return Receipt(message_id, state)
    if state != "failed":
        return None
    errors = _objects(status.get("errors"))
    first = errors[0] if errors else {}
    error = describe_error(first.get("code", "unknown"), first.get("title") or first.get("message"), _details(first))
    # Meta mostly reports 131050 (marketing stopped) after accepting the message, by webhook.
    return Receipt(message_id, "failed", error, opted_out=any(e.get("code") in OPTED_OUT_CODES for e in errors))
