"""SendGrid's signed Event Webhook: verified, then read into bounce feedback (`bounce` hard or soft,
`blocked` soft, `deferred` a delay, `dropped` a message never sent, `spamreport`, `delivered`).

SendGrid signs each POST with ECDSA P-256 over SHA-256 of the timestamp header followed by the raw
body (`X-Twilio-Email-Event-Webhook-Signature`, base64 DER; `X-Twilio-Email-Event-Webhook-Timestamp`)
and shows the verification key, base64 DER, on its Mail Settings page. The body is a JSON array of
events; each names its message by `smtp-id`, the Message-ID header Herald gave it.
"""
from __future__ import annotations

import base64
import binascii
import json
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.channels.bounce_reports import COMPLAINT, DELIVERED, DROPPED, HARD, SOFT, Feedback, Report, enhanced_status

# `dropped` events whose reason is SendGrid's own suppression list: the address bounced, reported
# spam or unsubscribed before (at SendGrid), so it goes on the merchant's list with that reason.
# Other reasons (invalid headers, spam content, a quota) say nothing about the address.
DROP_SUPPRESSIONS = {"bounced address": "bounced", "spam reporting address": "complained",
                     "unsubscribed address": "unsubscribed"}
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@lru_cache(maxsize=8)
def load_public_key(value: str) -> ec.EllipticCurvePublicKey | None:
    """The verification key from its base64 DER (or PEM) text; None unless an ECDSA P-256 key."""
    try:
        if value.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(value.split()), validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    return key


def signature_valid(public_key: str, body: bytes, signature: str, timestamp: str) -> bool:
    key = load_public_key(public_key) if public_key else None
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


class MalformedEvents(ValueError):
    """A signed body that is not SendGrid's array of events."""


def parse_events(body: bytes) -> list[Report]:
    """One report per event that says something about a recipient; other events are left out."""
    try:
        events = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvents("The body is not JSON.") from exc
    if not isinstance(events, list):
        raise MalformedEvents("The body is not a JSON array of events.")
    reports = []
    for event in events:
        feedback = _feedback(event) if isinstance(event, dict) else None
        if feedback is not None:
            ids = [str(event[key]) for key in ("smtp-id", "sg_message_id") if event.get(key)]
            reports.append(Report([feedback], message_ids=ids))
    return reports


def _feedback(event: dict[str, Any]) -> Feedback | None:
    kind, recipient = event.get("event"), str(event.get("email") or "") or None
    status = enhanced_status(str(event.get("status") or ""))
    reason = str(event.get("reason") or event.get("response") or "")[:2000]
    if kind in ("bounce", "blocked"):
        # `blocked` (a bounce event's type; also accepted as an event of its own): the receiving server
        # refused the message for now, for the sender's reputation or the content, not the address.
        soft = "blocked" in (kind, event.get("type")) or (status or "").startswith("4")
        return Feedback(SOFT if soft else HARD, recipient, status, reason or "Bounced (SendGrid).")
    if kind == "dropped":
        return Feedback(DROPPED, recipient, None, f"Dropped by SendGrid: {reason or 'no reason given'}.",
                        suppress=DROP_SUPPRESSIONS.get(reason.strip().lower()))
    if kind == "deferred":
        return Feedback(SOFT, recipient, status, reason or "Deferred (SendGrid).", final=False)
    if kind == "spamreport":
        return Feedback(COMPLAINT, recipient, None, "Marked as spam (SendGrid).")
    if kind == "delivered":
        return Feedback(DELIVERED, recipient, status, reason)
    return None
