"""Amazon SES notifications through Amazon SNS: verified as AWS documents it, then read into bounce
feedback.

An SNS message is genuine when its `Signature` (base64) verifies, with the public key of the X.509
certificate at its `SigningCertURL`, over the string to sign: the message's fields, each as its
name, a newline, its value and a newline, in byte order — `Message, MessageId, Subject (when
present), Timestamp, TopicArn, Type` for a Notification; `Message, MessageId, SubscribeURL,
Timestamp, Token, TopicArn, Type` for a (Un)SubscriptionConfirmation. SignatureVersion 1 is RSA
PKCS#1 v1.5 with SHA-1, version 2 with SHA-256. The certificate is fetched only from a URL that
matches SNS_URL_PATTERN (https on sns.<region>.amazonaws.com), and kept per URL.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.channels.bounce_reports import COMPLAINT, DELIVERED, DROPPED, HARD, SOFT, Feedback, Report, enhanced_status

SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATE_BYTES = 64 * 1024
TIMEOUT = (3.0, 5.0)


class NotFromSns(Exception):
    """The message is not proven to come from Amazon SNS."""


class SnsUnreachable(Exception):
    """Amazon SNS could not be reached (a certificate, a subscription confirmation): try later."""


class MalformedMessage(ValueError):
    """Not an SNS message (or its notification is not SES's JSON)."""


def load_message(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage("The body is not JSON.") from exc
    if not isinstance(message, dict) or message.get("Type") not in SIGNED_FIELDS:
        raise MalformedMessage("The body is not an Amazon SNS message.")
    return message


def string_to_sign(message: dict[str, Any]) -> bytes:
    names = SIGNED_FIELDS[message["Type"]]
    return "".join(f"{name}\n{message[name]}\n" for name in names if message.get(name) is not None).encode()


def allowed_url(url: Any, pattern: str) -> str | None:
    """The URL, when it is one SNS_URL_PATTERN allows (the whole URL must match)."""
    return url if isinstance(url, str) and re.fullmatch(pattern, url) is not None else None


class SigningCertificates:
    """Public keys of the certificates SNS signs with, fetched once per URL (a bounded few kept)."""

    def __init__(self, keep: int = 32) -> None:
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            if url in self._keys:
                self._keys.move_to_end(url)
                return self._keys[url]
        key = _fetch_public_key(url)
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > self._keep:
                self._keys.popitem(last=False)
        return key


def _fetch_public_key(url: str) -> rsa.RSAPublicKey:
    try:
        with requests.get(url, timeout=TIMEOUT, allow_redirects=False, stream=True) as response:
            body = response.raw.read(MAX_CERTIFICATE_BYTES + 1, decode_content=True)
            status = response.status_code
    except requests.RequestException as exc:
        raise SnsUnreachable(f"The signing certificate could not be fetched: {type(exc).__name__}") from exc
    if status != 200 or len(body) > MAX_CERTIFICATE_BYTES:
        raise SnsUnreachable(f"The signing certificate could not be fetched (HTTP {status}).")
    try:
        certificate = x509.load_pem_x509_certificate(body)
    except ValueError as exc:
        raise NotFromSns("SigningCertURL does not hold a certificate.") from exc
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise NotFromSns("The signing certificate is not valid now.")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise NotFromSns("The signing certificate does not hold an RSA key.")
    return key


def verify(message: dict[str, Any], url_pattern: str, certificates: SigningCertificates) -> None:
    """Raise NotFromSns unless the message is signed by SNS (SnsUnreachable: could not tell now)."""
    algorithm = HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise NotFromSns("Unknown SignatureVersion.")
    if any(not isinstance(message.get(name), str) for name in SIGNED_FIELDS[message["Type"]] if name != "Subject"):
        raise NotFromSns("A signed field is missing.")
    url = allowed_url(message.get("SigningCertURL"), url_pattern)
    if url is None:
        raise NotFromSns("SigningCertURL is not an Amazon SNS address.")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotFromSns("The signature is not base64.") from exc
    key = certificates.public_key(url)
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature as exc:
        raise NotFromSns("The signature does not match the message.") from exc


def confirm_subscription(message: dict[str, Any], url_pattern: str) -> None:
    """Visit the SubscribeURL of a verified SubscriptionConfirmation, as SNS asks."""
    url = allowed_url(message.get("SubscribeURL"), url_pattern)
    if url is None:
        raise NotFromSns("SubscribeURL is not an Amazon SNS address.")
    try:
        response = requests.get(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise SnsUnreachable(f"The subscription could not be confirmed: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise SnsUnreachable(f"The subscription could not be confirmed (HTTP {response.status_code}).")


def parse_notification(text: str) -> Report | None:
    """An SES notification (or event) as a report; None for types that say nothing of recipients."""
    try:
        notification = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage("The notification is not JSON.") from exc
    if not isinstance(notification, dict):
        raise MalformedMessage("The notification is not a JSON object.")
    kind = notification.get("notificationType") or notification.get("eventType")
    feedback = _FEEDBACK.get(str(kind), lambda _: [])(notification)
    if not feedback:
        return None
    mail = _object(notification.get("mail"))
    headers = _object(mail.get("commonHeaders"))
    addresses = [str(a) for a in (mail.get("source"), headers.get("returnPath")) if a]
    message_ids = [str(i) for i in (headers.get("messageId"), mail.get("messageId")) if i]
    return Report(feedback, addresses, message_ids)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _entries(notification: dict[str, Any], section: str, recipients: str) -> tuple[dict[str, Any], list[Any]]:
    body = _object(notification.get(section))
    found = body.get(recipients)
    return body, found if isinstance(found, list) else []


def _bounces(notification: dict[str, Any]) -> list[Feedback]:
    bounce, recipients = _entries(notification, "bounce", "bouncedRecipients")
    # Transient and Undetermined: SES gave up on the message, but the address may work another day.
    kind = HARD if bounce.get("bounceType") == "Permanent" else SOFT
    subtype = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
    return [Feedback(kind, str(r.get("emailAddress") or "") or None, enhanced_status(str(r.get("status") or "")),
                     str(r.get("diagnosticCode") or f"Bounced ({subtype}).")[:2000])
            for r in recipients if isinstance(r, dict)]


def _complaints(notification: dict[str, Any]) -> list[Feedback]:
    complaint, recipients = _entries(notification, "complaint", "complainedRecipients")
    feedback_type = complaint.get("complaintFeedbackType") or "abuse"
    if feedback_type == "not-spam":
        return []
    return [Feedback(COMPLAINT, str(r.get("emailAddress") or "") or None, None, f"Complaint ({feedback_type}).")
            for r in recipients if isinstance(r, dict)]


def _deliveries(notification: dict[str, Any]) -> list[Feedback]:
    delivery, recipients = _entries(notification, "delivery", "recipients")
    return [Feedback(DELIVERED, str(r), None, str(delivery.get("smtpResponse") or "")[:2000]) for r in recipients]


def _delays(notification: dict[str, Any]) -> list[Feedback]:
    delay, recipients = _entries(notification, "deliveryDelay", "delayedRecipients")
    return [Feedback(SOFT, str(r.get("emailAddress") or "") or None, enhanced_status(str(r.get("status") or "")),
                     str(r.get("diagnosticCode") or f"Delayed ({delay.get('delayType')}).")[:2000], final=False)
            for r in recipients if isinstance(r, dict)]


def _rejects(notification: dict[str, Any]) -> list[Feedback]:
    """SES took the message but refused to send it (it found a virus): it went to nobody, and says
    nothing about the addresses (`mail.destination` names them)."""
    reason = _object(notification.get("reject")).get("reason") or "no reason given"
    destination = _object(notification.get("mail")).get("destination")
    recipients = destination if isinstance(destination, list) else []
    return [Feedback(DROPPED, str(r), None, f"Rejected by Amazon SES: {reason}."[:2000]) for r in recipients if r]


_FEEDBACK = {"Bounce": _bounces, "Complaint": _complaints, "Delivery": _deliveries, "DeliveryDelay": _delays,
             "Reject": _rejects}
