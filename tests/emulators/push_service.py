"""Emulator of a Web Push service (RFC 8030) that checks VAPID (RFC 8292) and decrypts payloads (RFC 8291).

- `POST   /push/{subscription_id}`   deliver a push message → 201 Created + `Location: /m/{message_id}`
- `DELETE /m/{message_id}`           cancel a push message (RFC 8030 §6.2) → 204

A real push service cannot read payloads; this one holds each subscription's private key and auth secret
(as the browser would) so tests can assert on the decrypted plaintext, and it answers 400 when a payload
does not decrypt, which surfaces sender-side encryption bugs immediately.

Checks, in order: subscription known (404) and live (410); VAPID `Authorization: vapid t=<JWT>, k=<key>`
— absent: 401, present but invalid (signature, `aud` not this origin, `exp` past or more than 24 h away,
`sub` not a mailto:/https: URI, `k` not the subscription's applicationServerKey): 403, as RFC 8292 §4.2
suggests; `TTL` required (400); `Urgency`/`Topic` well-formed (400); payload ≤ 4096 bytes (413);
`Content-Encoding: aes128gcm` (400). Error bodies follow Mozilla autopush: `{code, errno, error, message,
more_info}`.
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response

MAX_PAYLOAD_BYTES = 4096
MAX_TTL_SECONDS = 28 * 24 * 3600  # pushes asking for longer are kept this long; the 201 says so via TTL
MAX_VAPID_LIFETIME = 24 * 3600
URGENCIES = ("very-low", "low", "normal", "high")
ERRORS_URL = "https://mozilla-services.github.io/autopush-rs/errors.html"

_PUSH = re.compile(r"/push/(?P<sid>[A-Za-z0-9_-]+)")
_MESSAGE = re.compile(r"/m/(?P<mid>[A-Za-z0-9_-]+)")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


# -- encoding helpers --------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed P-256 point browsers and VAPID use."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def vapid_keys() -> tuple[str, str]:
    """A fresh VAPID key pair: (private key as base64url raw 32 bytes, public key as base64url point).

    This is the format `web-push generate-vapid-keys` prints; pywebpush accepts the private half as
    `vapid_private_key`, and the public half is the browser's `applicationServerKey`.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big")), b64url(raw_public_key(key))


def push_error(status: int, errno: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"code": status, "errno": errno, "error": HTTPStatus(status).phrase, "message": message,
            "more_info": ERRORS_URL}
    return json_response(body, status, headers)


class VapidError(Exception):
    """Authentication was present but unacceptable (→ 403)."""


def verify_vapid(header: str, origin: str, now: float | None = None) -> tuple[dict[str, Any], bytes]:
    """Check an RFC 8292 `vapid t=..., k=...` credential for `origin`; returns (claims, raw public key)."""
    token, key_raw, public = _parse_credential(header)
    head_b64, claims_b64, sig_b64 = token
    try:
        head, claims = json.loads(b64url_decode(head_b64)), json.loads(b64url_decode(claims_b64))
        sig = b64url_decode(sig_b64)
    except (ValueError, binascii.Error) as exc:
        raise VapidError(f"malformed JWT: {exc}") from exc
    if not isinstance(head, dict) or head.get("alg") != "ES256" or len(sig) != 64:
        raise VapidError("the JWT must be signed with ES256")
    # JWS carries ES256 signatures as raw r||s; cryptography verifies DER.
    signature = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(signature, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VapidError("the JWT signature does not verify with k") from exc
    _check_claims(claims, origin, time.time() if now is None else now)
    return claims, key_raw


def _parse_credential(header: str) -> tuple[list[str], bytes, ec.EllipticCurvePublicKey]:
    """`vapid t=<jwt>, k=<key>` (spaces after the comma optional) → (JWT parts, raw key, key)."""
    params: dict[str, str] = {}
    for part in header.split(" ", 1)[-1].split(","):
        name, _, value = part.strip().partition("=")
        params[name.lower()] = value
    token, key_text = params.get("t", ""), params.get("k", "")
    if token.count(".") != 2 or not key_text:
        raise VapidError("the vapid credential needs t=<JWT> and k=<public key>")
    try:
        key_raw = b64url_decode(key_text)
        return token.split("."), key_raw, ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_raw)
    except (ValueError, binascii.Error) as exc:
        raise VapidError(f"k is not a P-256 public key: {exc}") from exc


def _check_claims(claims: Any, origin: str, now: float) -> None:
    if not isinstance(claims, dict):
        raise VapidError("the JWT claims must be an object")
    if str(claims.get("aud", "")).rstrip("/").lower() != origin.lower():
        raise VapidError(f"aud must be the push resource's origin {origin}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
        raise VapidError("exp is missing or in the past")
    if exp > now + MAX_VAPID_LIFETIME:
        raise VapidError("exp must be no more than 24 hours after the request")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise VapidError("sub must be a mailto: or https: contact URI")


@dataclass
class _Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: bytes | None = None  # set → a restricted subscription (RFC 8292 §4)
    state: str = "active"  # active | gone | not_found


class PushServiceEmulator(EmulatorServer):
    """Subscriptions made by `new_subscription()` receive pushes; plaintexts land in `.received`."""

    def __init__(self, *, require_vapid: bool = True, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        super().__init__()
        # VAPID is voluntary in RFC 8292, but the big push services (FCM, autopush) demand it in practice.
        self.require_vapid = require_vapid
        self.max_payload = max_payload
        self._subscriptions: dict[str, _Subscription] = {}
        self._received: list[dict[str, Any]] = []
        self._pending: dict[str, str] = {}  # message id -> subscription id, until cancelled

    # -- subscriptions and knobs -----------------------------------------------------------------
    def new_subscription(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A browser's `PushSubscription.toJSON()`: a real P-256 key pair and 16-byte auth secret.

        Pass the sender's VAPID public key to make it restricted: pushes signed by any other key get 403.
        """
        sub = _Subscription(id=secrets.token_urlsafe(16), private_key=ec.generate_private_key(ec.SECP256R1()),
                            auth_secret=secrets.token_bytes(16),
                            application_server_key=b64url_decode(application_server_key)
                            if application_server_key else None)
        with self.lock:
            self._subscriptions[sub.id] = sub
        return {"endpoint": f"{self.base_url}/push/{sub.id}", "expirationTime": None,
                "keys": {"p256dh": b64url(raw_public_key(sub.private_key)), "auth": b64url(sub.auth_secret)}}

    def gone(self, subscription: str | dict[str, Any]) -> None:
        """The user unsubscribed: pushes to it answer 410 Gone from now on."""
        self._set_state(subscription, "gone")

    def not_found(self, subscription: str | dict[str, Any]) -> None:
        """The push service no longer knows this endpoint: 404 Not Found."""
        self._set_state(subscription, "not_found")

    def subscription_id(self, subscription: str | dict[str, Any]) -> str:
        """Accepts an id, an endpoint URL or a subscription dict."""
        endpoint = subscription["endpoint"] if isinstance(subscription, dict) else subscription
        return endpoint.rstrip("/").rsplit("/", 1)[-1]

    def _set_state(self, subscription: str | dict[str, Any], state: str) -> None:
        with self.lock:
            self._subscriptions[self.subscription_id(subscription)].state = state

    @property
    def received(self) -> list[dict[str, Any]]:
        """Accepted pushes: `{subscription_id, message_id, plaintext, headers, ttl, urgency, topic, vapid}`."""
        with self.lock:
            return copy.deepcopy(self._received)

    def received_for(self, subscription: str | dict[str, Any]) -> list[dict[str, Any]]:
        wanted = self.subscription_id(subscription)
        return [r for r in self.received if r["subscription_id"] == wanted]

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        push, message = _PUSH.fullmatch(request.path), _MESSAGE.fullmatch(request.path)
        if push and request.method == "POST":
            return self._push(request, push["sid"])
        if message and request.method == "DELETE":
            with self.lock:
                found = self._pending.pop(message["mid"], None)
            return Response(status=204) if found else push_error(404, 102, "No such push message")
        return push_error(404, 102, "Invalid URL endpoint")

    def _push(self, request: Request, sid: str) -> Response:
        with self.lock:
            sub = self._subscriptions.get(sid)
        if sub is None or sub.state == "not_found":
            return push_error(404, 102, "Invalid URL endpoint")
        if sub.state == "gone":
            return push_error(410, 106, "Push subscription is no longer valid")
        vapid = self._authenticate(request, sub)
        if isinstance(vapid, Response):
            return vapid
        ttl = _parse_ttl(request.headers.get("TTL"))
        if isinstance(ttl, Response):
            return ttl
        problem = _check_optional_headers(request) or self._check_body(request)
        if problem is not None:
            return problem
        plaintext = self._decrypt(request.get_data(), sub)
        if isinstance(plaintext, Response):
            return plaintext
        return self._accept(request, sub, plaintext, ttl, vapid)

    def _authenticate(self, request: Request, sub: _Subscription) -> dict[str, Any] | None | Response:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("vapid "):  # absent, or a pre-RFC scheme we do not accept
            if self.require_vapid or sub.application_server_key is not None:
                return push_error(401, 109, "Missing vapid authentication", {"WWW-Authenticate": "vapid"})
            return None
        try:
            # The audience is the origin the request was addressed to (its Host), as at a real service.
            claims, key = verify_vapid(header, request.host_url.rstrip("/"))
        except VapidError as exc:
            return push_error(403, 109, f"Invalid vapid authentication: {exc}")
        if sub.application_server_key is not None and key != sub.application_server_key:
            return push_error(403, 109, "The vapid key is not the subscription's applicationServerKey")
        return {**claims, "k": b64url(key)}

    def _check_body(self, request: Request) -> Response | None:
        body = request.get_data()
        if len(body) > self.max_payload:
            return push_error(413, 104, f"Data payload must be at most {self.max_payload} bytes")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if body and not encoding:
            return push_error(400, 111, "Missing Content-Encoding for an encrypted payload")
        if body and encoding != "aes128gcm":
            return push_error(400, 110, f"Unsupported Content-Encoding {encoding!r}: the emulator takes aes128gcm")
        return None

    def _decrypt(self, body: bytes, sub: _Subscription) -> bytes | Response:
        if not body:
            return b""
        try:
            # aes128gcm carries the sender's public key (keyid) and salt in its header, so only the
            # receiver's private key and auth secret are needed.
            return bytes(http_ece.decrypt(body, private_key=sub.private_key, auth_secret=sub.auth_secret,
                                          version="aes128gcm"))
        except Exception as exc:  # noqa: BLE001 — any failure here means the sender encrypted for someone else, or badly
            return push_error(400, 110, f"Payload does not decrypt for this subscription (RFC 8291): {exc!r}")

    def _accept(self, request: Request, sub: _Subscription, plaintext: bytes, ttl: int,
                vapid: dict[str, Any] | None) -> Response:
        message_id = secrets.token_urlsafe(12)
        kept = min(ttl, MAX_TTL_SECONDS)
        record = {"subscription_id": sub.id, "message_id": message_id, "plaintext": plaintext,
                  "headers": dict(request.headers.items()), "ttl": ttl,
                  "urgency": request.headers.get("Urgency", "normal"), "topic": request.headers.get("Topic"),
                  "vapid": vapid}
        with self.lock:
            self._received.append(record)
            self._pending[message_id] = sub.id
        # RFC 8030 §5: 201 with the push message resource; TTL echoes what the service will actually keep.
        return Response(status=201, headers={"Location": f"{self.base_url}/m/{message_id}", "TTL": str(kept)})

    def rate_limited_response(self, retry_after: float) -> Response:
        return push_error(429, 201, "Too many requests; back off and retry",
                          {"Retry-After": str(math.ceil(retry_after))})

    def server_error_response(self, status: int) -> Response:
        return push_error(status, 202 if status == 503 else 999, "The push service failed; retry later")


def _parse_ttl(value: str | None) -> int | Response:
    if value is None:
        return push_error(400, 111, "Missing TTL header")
    if not value.strip().isdigit():
        return push_error(400, 112, "Invalid TTL header value: must be a non-negative number of seconds")
    return int(value.strip())


def _check_optional_headers(request: Request) -> Response | None:
    urgency, topic = request.headers.get("Urgency"), request.headers.get("Topic")
    if urgency is not None and urgency.strip().lower() not in URGENCIES:
        return push_error(400, 110, f"Invalid Urgency header: must be one of {', '.join(URGENCIES)}")
    if topic is not None and not _TOPIC.fullmatch(topic.strip()):
        return push_error(400, 113, "Invalid Topic header: at most 32 base64url characters")
    return None
