"""How a webhook request is signed, and how a receiver checks it (the README shows the same check
for receivers to copy).

Each request carries `Herald-Timestamp` (Unix seconds, when this attempt was made) and
`Herald-Signature: v1=<hex>`, the HMAC-SHA256 of `<timestamp>.<raw body>` keyed with the endpoint's
signing secret (the whole `whsec_...` string, as UTF-8). The timestamp is signed too, so a captured
request cannot be replayed later than the receiver's tolerance. `Herald-Event-Id` is the event's
id, the same on every attempt and replay: receivers de-duplicate by it.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

EVENT_ID_HEADER = "Herald-Event-Id"
EVENT_TYPE_HEADER = "Herald-Event-Type"
DELIVERY_ID_HEADER = "Herald-Delivery-Id"
TIMESTAMP_HEADER = "Herald-Timestamp"
SIGNATURE_HEADER = "Herald-Signature"
SECRET_PREFIX = "whsec_"
VERSION = "v1"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def headers(secret: str, body: bytes, event_id: str, event_type: str, delivery_id: str,
            timestamp: int | None = None) -> dict[str, str]:
    """The headers of one attempt, signed at `timestamp` (now by default)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "User-Agent": "Herald-Webhooks/1",
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }


def verify(secret: str, body: bytes, timestamp: str | None, signature: str | None,
           tolerance: int = TOLERANCE_SECONDS, now: float | None = None) -> bool:
    """What a receiver does: the signature matches the raw body and timestamp, and the timestamp is
    within `tolerance` seconds of now. Several `v1=` values (comma-separated) may be offered."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, offered.strip()) for offered in signature.split(","))
