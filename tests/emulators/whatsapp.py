"""Emulator of the WhatsApp Business Cloud API's send endpoint and its `messages` webhooks.

- `POST /{version}/{phone_number_id}/messages`   send a message (JSON body; `template` and `text` types)

Requests authenticate with `Authorization: Bearer <token>` (or an `access_token` parameter, as on any Graph
API call). Errors use Graph API's envelope `{"error": {"message", "type", "code", "error_data"?,
"fbtrace_id"}}`. Status webhooks are POSTed to the app's callback URL in the documented
`whatsapp_business_account` shape, signed with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret,
raw body)>`; the subscription handshake is the GET `hub.mode`/`hub.verify_token`/`hub.challenge`.

Sources for the formats: developers.facebook.com WhatsApp Cloud API "Send messages", "Error codes", the
"Status messages webhook reference" and Graph API "Webhooks: getting started" (verification requests,
payload signatures). Throttling (130429/80007/131056) answers HTTP 400 as recalled from Meta's error-code
table (not re-checked against the page); `rate_limit_status=429` emulates gateways that answer 429.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response
from tests.emulators.meta import graph_error

DEFAULT_TOKEN = "whatsapp_test_token"
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_NUMBER = "15550783881"
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
STATUSES = ("sent", "delivered", "read", "failed")
PARAMETER_TYPES = ("text", "currency", "date_time", "image", "document", "video", "payload", "location")
RATE_LIMITS = {
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    80007: ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
    131056: ("(Business Account, Consumer Account) pair rate limit hit",
             "Too many messages sent from this phone number to the same phone number in a short period."),
}
UNDELIVERABLE = {"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                 "error_data": {"details": "Message Undeliverable."}, "href": ERROR_CODES_URL}

_PATH = re.compile(r"/(?P<version>v\d+\.\d+)/(?P<phone_number_id>[^/]+)/messages")


def hub_signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value Meta sends: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_challenge(url: str, verify_token: str, challenge: str | None = None,
                     mode: str = "subscribe") -> tuple[int, str]:
    """Meta's subscription handshake against the app: returns the app's (HTTP status, body text).

    A correct app answers 200 with exactly `challenge` when `verify_token` is its configured token.
    """
    params = {"hub.mode": mode, "hub.verify_token": verify_token,
              "hub.challenge": challenge or str(secrets.randbelow(10**10))}
    response = requests.get(url, params=params, timeout=5)
    return response.status_code, response.text


def new_wamid(wa_id: str) -> str:
    """A `wamid.` id shaped like Meta's (base64 of a small binary record naming the recipient)."""
    raw = b"\x1c\x18" + bytes([len(wa_id)]) + wa_id.encode() + b"\x15\x02\x00\x11\x18\x12"
    return "wamid." + base64.b64encode(raw + secrets.token_hex(9).upper().encode()).decode()


def _invalid(code: int, title: str, details: str, status: int = 400) -> Response:
    return graph_error(f"(#{code}) {title}", code, status=status,
                       error_data={"messaging_product": "whatsapp", "details": details})


class WhatsAppEmulator(EmulatorServer):
    """Accepts template/text sends, records them, and posts signed status webhooks on request."""

    def __init__(self, tokens: Iterable[str] | None = None, app_secret: str = "whatsapp_app_secret", *,
                 phone_numbers: Mapping[str, str] | None = None, waba_id: str = "102290129340398",
                 templates: Mapping[str, Mapping[str, int]] | None = None, rate_limit_status: int = 400) -> None:
        super().__init__()
        self.tokens: set[str] = set(tokens) if tokens is not None else {DEFAULT_TOKEN}
        self.app_secret = app_secret
        # phone_number_id -> display number; only these ids can send (others are unknown Graph objects).
        self.phone_numbers = dict(phone_numbers or {DEFAULT_PHONE_NUMBER_ID: DEFAULT_DISPLAY_NUMBER})
        self.waba_id = waba_id
        # Optional template registry: name -> {language code: number of body parameters}. None accepts any.
        self.templates = {name: dict(langs) for name, langs in templates.items()} if templates else None
        self.rate_limit_status = rate_limit_status  # Meta documents 400 for throttling; 429 tests that variant
        self._rate_limit_codes: deque[int] = deque()
        self._messages: dict[str, dict[str, Any]] = {}
        self._deliveries: list[dict[str, Any]] = []

    # -- knobs and assertions ------------------------------------------------------------------
    def rate_limit_next(self, n: int = 1, retry_after: float = 1, code: int = 130429) -> None:
        """Throttle the next n sends with Graph error `code` (130429 throughput, 80007 WABA, 131056 pair)."""
        with self.lock:
            self._rate_limit_codes.extend([code] * n)
            super().rate_limit_next(n, retry_after)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted sends: `{id, phone_number_id, to, wa_id, status, payload}`, oldest first."""
        with self.lock:
            return copy.deepcopy(list(self._messages.values()))

    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Webhooks posted: `{url, payload, body, signature, status_code, error}`."""
        with self.lock:
            return copy.deepcopy(self._deliveries)

    def verify_challenge(self, url: str, verify_token: str, challenge: str | None = None) -> tuple[int, str]:
        return verify_challenge(url, verify_token, challenge)

    # -- webhooks ------------------------------------------------------------------------------
    def status_payload(self, wamid: str, status: str, recipient_id: str | None = None,
                       errors: list[dict[str, Any]] | None = None, *, category: str = "marketing") -> dict[str, Any]:
        """The documented status webhook body for message `wamid` (unknown ids use the first phone number)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.lock:
            message = self._messages.get(wamid, {})
        phone_number_id = message.get("phone_number_id") or next(iter(self.phone_numbers))
        entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(time.time())),
                                 "recipient_id": recipient_id or message.get("wa_id", "")}
        if status in ("sent", "delivered"):
            entry.update(_billing(wamid, status, category))
        if status == "failed" or errors:
            entry["errors"] = copy.deepcopy(errors or [UNDELIVERABLE])
        value = {"messaging_product": "whatsapp",
                 "metadata": {"display_phone_number": self.phone_numbers[phone_number_id],
                              "phone_number_id": phone_number_id},
                 "statuses": [entry]}
        return {"object": "whatsapp_business_account",
                "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}]}

    def send_status(self, webhook_url: str, wamid: str, status: str, recipient_id: str | None = None,
                    errors: list[dict[str, Any]] | None = None, **options: Any) -> int | None:
        """POST a signed status webhook; returns the app's HTTP status (None if it could not be reached)."""
        payload = self.status_payload(wamid, status, recipient_id, errors, **options)
        return self.post_webhook(webhook_url, payload)

    def post_webhook(self, webhook_url: str, payload: dict[str, Any]) -> int | None:
        """Sign and POST any webhook payload, as Meta does (JSON with non-ASCII escaped, then signed)."""
        body = json.dumps(payload).encode()
        signature = hub_signature(self.app_secret, body)
        record: dict[str, Any] = {"url": webhook_url, "payload": payload, "body": body, "signature": signature,
                                  "status_code": None, "error": None}
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature,
                   "User-Agent": "facebookexternalua"}
        try:
            record["status_code"] = requests.post(webhook_url, data=body, headers=headers, timeout=5).status_code
        except requests.RequestException as exc:  # an unreachable app is an outcome for the test to check
            record["error"] = repr(exc)
        with self.lock:
            self._deliveries.append(record)
            for status in _statuses(payload):
                if status.get("id") in self._messages:
                    self._messages[status["id"]]["status"] = status.get("status")
        return record["status_code"]

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "POST":
            return graph_error(f"Unknown path components: {request.path}", 2500)
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        phone_number_id = match["phone_number_id"]
        if phone_number_id not in self.phone_numbers:
            return graph_error(f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                               "cannot be loaded due to missing permissions, or does not support this operation.",
                               100, type_="GraphMethodException", subcode=33)
        body = request.get_json(silent=True, force=True)
        problem = self._validate(body)
        if problem is not None:
            return problem
        return self._accept(phone_number_id, body)

    def _authenticate(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else request.args.get("access_token", "")
        if not token:
            return graph_error("An access token is required to request this resource.", 104, status=401)
        if token not in self.tokens:
            return graph_error("Invalid OAuth access token - Cannot parse access token", 190, status=401)
        return None

    def _validate(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _invalid(100, "Invalid parameter", "The request body must be a JSON object.")
        if body.get("messaging_product") != "whatsapp":
            return _invalid(100, "Invalid parameter", "The parameter messaging_product is required "
                                                      "and must be 'whatsapp'.")
        if body.get("recipient_type", "individual") != "individual":
            return _invalid(100, "Invalid parameter", "recipient_type must be 'individual'.")
        if not isinstance(body.get("to"), str) or not re.sub(r"\D", "", body["to"]):
            return _invalid(100, "Invalid parameter", "The parameter to is required.")
        kind = body.get("type", "text")
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
                return _invalid(131008, "Required parameter is missing", "Parameter 'text.body' is required.")
            return None
        if kind != "template":
            return _invalid(131009, "Parameter value is not valid", f"The emulator does not send type '{kind}'.")
        return self._validate_template(body.get("template"))

    def _validate_template(self, template: Any) -> Response | None:
        if not isinstance(template, dict):
            return _invalid(131008, "Required parameter is missing", "Parameter 'template' is required.")
        name, language = template.get("name"), template.get("language")
        if not isinstance(name, str) or not name:
            return _invalid(131008, "Required parameter is missing", "Parameter 'name' is required.")
        if not isinstance(language, dict) or not isinstance(language.get("code"), str) or not language["code"]:
            return _invalid(131008, "Required parameter is missing", "Parameter 'language.code' is required.")
        components = template.get("components", [])
        problem = _check_components(components)
        if problem is not None:
            return _invalid(131009, "Parameter value is not valid", problem)
        return self._check_registry(name, language["code"], components)

    def _check_registry(self, name: str, code: str, components: list[dict[str, Any]]) -> Response | None:
        if self.templates is None:
            return None
        expected = self.templates.get(name, {}).get(code)
        if expected is None:
            return _invalid(132001, "Template name does not exist in the translation",
                            f"template name ({name}) does not exist in {code}", status=404)
        given = sum(len(c.get("parameters", [])) for c in components if c.get("type") == "body")
        if given != expected:
            return _invalid(132000, "Number of parameters does not match the expected number of params",
                            f"body: number of localizable_params ({given}) does not match the expected "
                            f"number of params ({expected})")
        return None

    def _accept(self, phone_number_id: str, body: dict[str, Any]) -> Response:
        wa_id = re.sub(r"\D", "", body["to"])
        wamid = new_wamid(wa_id)
        with self.lock:
            self._messages[wamid] = {"id": wamid, "phone_number_id": phone_number_id, "to": body["to"],
                                     "wa_id": wa_id, "status": "accepted", "payload": copy.deepcopy(body)}
        message: dict[str, Any] = {"id": wamid}
        if body.get("type") == "template":  # message_status is only reported for template sends
            message["message_status"] = "accepted"
        return json_response({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": wa_id}],
                              "messages": [message]})

    def rate_limited_response(self, retry_after: float) -> Response:
        with self.lock:
            code = self._rate_limit_codes.popleft() if self._rate_limit_codes else 130429
        title, details = RATE_LIMITS.get(code, RATE_LIMITS[130429])
        headers = {"Retry-After": str(int(retry_after))} if self.rate_limit_status == 429 else None
        return graph_error(f"(#{code}) {title}", code, status=self.rate_limit_status, headers=headers,
                           error_data={"messaging_product": "whatsapp", "details": details})

    def server_error_response(self, status: int) -> Response:
        return graph_error("(#131000) Something went wrong", 131000, status=status,
                           error_data={"messaging_product": "whatsapp", "details": "Something went wrong."})


def _check_components(components: Any) -> str | None:
    if not isinstance(components, list):
        return "template.components must be an array."
    for index, component in enumerate(components):
        if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
            return f"components[{index}].type must be header, body or button."
        for p_index, parameter in enumerate(component.get("parameters", [])):
            kind = parameter.get("type") if isinstance(parameter, dict) else None
            if kind not in PARAMETER_TYPES:
                return f"components[{index}].parameters[{p_index}].type is not valid."
            if kind == "text" and (not isinstance(parameter.get("text"), str) or not parameter["text"]):
                return f"components[{index}].parameters[{p_index}].text is required."
    return None


def _billing(wamid: str, status: str, category: str) -> dict[str, Any]:
    """conversation/pricing blocks of sent and delivered statuses (expiration_timestamp only on sent)."""
    conversation: dict[str, Any] = {"id": hashlib.sha256(wamid.encode()).hexdigest()[:32], "origin": {"type": category}}
    if status == "sent":
        conversation["expiration_timestamp"] = str(int(time.time()) + 24 * 3600)
    return {"conversation": conversation,
            "pricing": {"billable": True, "pricing_model": "PMP", "category": category, "type": "regular"}}


def _statuses(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [status for entry in payload.get("entry", []) for change in entry.get("changes", [])
            for status in change.get("value", {}).get("statuses", [])]
