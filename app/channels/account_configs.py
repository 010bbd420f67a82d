"""Per-type configuration of merchants' provider accounts (Twilio SMS, WhatsApp Cloud API, Web Push
VAPID): which fields exist, their rules, and which are secrets.

Built like app/sources/configs.py and from its field helpers: a field is a secret because it is
declared with `secret_field()`, and SECRET_FIELDS is derived from those declarations. A config is stored
as loaded here (optional fields left out rather than null).
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from app.channels.catalogue import ACCOUNT_CHANNELS, require_every_channel
from app.channels.configs import MESSAGES_PER_SECOND_MAX, JsonNumber
from app.config import MAX_IN_FLIGHT
from app.schemas.base import no_nul, pattern_field, secret_field
from app.schemas.contacts import E164Phone

SUBJECT_MAX = 2048
QUOTA_MAX = 1_000_000_000
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# Tokens travel in Authorization headers: visible ASCII only, so a pasted line break or space is
# refused here rather than by the HTTP client at send time.
_VISIBLE_ASCII = re.compile(r"[!-~]+")


def _token_chars(value: str) -> None:
    if not _VISIBLE_ASCII.fullmatch(value):
        raise ValidationError("Must be printable ASCII without spaces.")


class _Sid(fields.String):
    """A Twilio SID: two letters, then 32 hex digits that Twilio writes (and its callbacks send) in
    lower case — stored that way so a callback's AccountSid finds the account."""

    def __init__(self, prefix: str, **kwargs: Any) -> None:
        rule = validate.Regexp(rf"^{prefix}[0-9a-f]{{32}}$", error=f"Must be {prefix} followed by 32 hex digits.")
        super().__init__(validate=rule, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        sid = super()._deserialize(value, attr, data, **kwargs)
        return sid[:2] + sid[2:].lower()


class _SendingLimitsSchema(Schema):
    """What every provider account may say about how fast Herald sends through it."""

    maxInFlight = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=MAX_IN_FLIGHT),
        metadata={"description": "Messages each sender keeps in flight at once (default: the channel's)."},
    )
    messagesPerSecond = JsonNumber(
        allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=MESSAGES_PER_SECOND_MAX),
        metadata={"description": "Rate limit shared by every campaign sending through this account."},
    )
    messagesPerHour = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=QUOTA_MAX),
        metadata={"description": "Quota per clock hour (UTC); sends past it wait for the next hour."},
    )
    messagesPerDay = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=QUOTA_MAX),
        metadata={"description": "Quota per UTC day; sends past it wait for the next day."},
    )


class SmsAccountSchema(_SendingLimitsSchema):
    accountSid = _Sid("AC", required=True)
    authToken = secret_field(validate.Length(min=16, max=128), _token_chars)
    fromNumber = E164Phone(allow_none=True)
    messagingServiceSid = _Sid("MG", allow_none=True)

    # Judged on what was sent, so the rule is reported beside other fields' errors, and a sender
    # that was sent but is malformed gets only its own error.
    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _one_sender(self, data: dict[str, Any], original: Mapping[str, Any], **kwargs: Any) -> None:
        if not isinstance(original, Mapping):
            return  # already refused as a whole
        senders = [name for name in ("fromNumber", "messagingServiceSid") if original.get(name) is not None]
        if len(senders) != 1:
            message = "Give exactly one of fromNumber and messagingServiceSid."
            raise ValidationError({"fromNumber": [message], "messagingServiceSid": [message]})


class WhatsAppAccountSchema(_SendingLimitsSchema):
    phoneNumberId = pattern_field(r"^\d+$", "Must be digits only.", required=True)
    accessToken = secret_field(_token_chars)
    apiVersion = pattern_field(r"^v\d+\.\d+$", "Must be a Graph API version such as v21.0.", load_default="v21.0")
    businessAccountId = pattern_field(r"^\d+$", "Must be digits only.", allow_none=True)


# --- Web Push (VAPID, RFC 8292) -------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(value: str) -> bytes:
    if not _BASE64URL.fullmatch(value):
        return b""
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return b""


def _public_key(value: str) -> ec.EllipticCurvePublicKey:
    raw = _b64url_decode(value)
    if len(raw) != 65 or raw[0] != 0x04:
        raise ValidationError("Must be a P-256 public key: the 65-byte uncompressed point, base64url-encoded.")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise ValidationError("Is not a point on the P-256 curve.") from exc


def _private_key(value: str) -> ec.EllipticCurvePrivateKey:
    raw = _b64url_decode(value)
    if len(raw) != 32:
        raise ValidationError("Must be a P-256 private key: the 32-byte scalar, base64url-encoded.")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ValidationError("Is not a valid P-256 private key.") from exc


def _raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def vapid_key_pair(key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, str]:
    """`vapidPrivateKey` / `vapidPublicKey` in the form `web-push generate-vapid-keys` prints (and
    pywebpush and browsers take); a fresh pair unless a key is given."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    return {
        "vapidPrivateKey": _b64url(key.private_numbers().private_value.to_bytes(32, "big")),
        "vapidPublicKey": _b64url(_raw_public(key)),
    }


def _check_public_key(value: str) -> None:
    _public_key(value)


def _check_private_key(value: str) -> None:
    _private_key(value)


def _vapid_subject(value: str) -> None:
    # RFC 8292 §2.1: the push service's contact for the sender, a mailto: or an https: URL.
    if value.startswith("mailto:"):
        validate.Email(error="Must be mailto: followed by an email address.")(value[len("mailto:"):])
    else:
        validate.URL(schemes={"https"}, error="Must be a mailto: or an https: URL.")(value)


class PushAccountSchema(_SendingLimitsSchema):
    subject = fields.String(required=True, validate=[validate.Length(max=SUBJECT_MAX), no_nul, _vapid_subject])
    vapidPublicKey = fields.String(
        validate=_check_public_key,
        metadata={"description": "Not secret: the applicationServerKey browsers subscribe with."},
    )
    vapidPrivateKey = secret_field(_check_private_key)

    @pre_load
    def _generate_missing_pair(self, data: Any, **kwargs: Any) -> Any:
        # Neither half sent (nor kept from the stored account): the merchant wants Herald to make one.
        if isinstance(data, Mapping) and "vapidPrivateKey" not in data and "vapidPublicKey" not in data:
            return {**data, **vapid_key_pair()}
        return data

    @validates_schema
    def _pair_matches(self, data: dict[str, Any], **kwargs: Any) -> None:
        public = data.get("vapidPublicKey")
        if public is not None and _b64url_decode(public) != _raw_public(_private_key(data["vapidPrivateKey"])):
            raise ValidationError("Is not the public key of vapidPrivateKey.", "vapidPublicKey")

    @post_load
    def _canonical_pair(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Both halves in canonical form; the public one derived from the private one when left out."""
        return {**data, **vapid_key_pair(_private_key(data["vapidPrivateKey"]))}


ACCOUNT_CONFIG_SCHEMAS: dict[str, type[Schema]] = {
    "sms": SmsAccountSchema,
    "whatsapp": WhatsAppAccountSchema,
    "push": PushAccountSchema,
}

require_every_channel(ACCOUNT_CONFIG_SCHEMAS, "ACCOUNT_CONFIG_SCHEMAS", ACCOUNT_CHANNELS)
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    channel_type: tuple(name for name, field in schema().fields.items() if field.metadata.get("secret"))
    for channel_type, schema in ACCOUNT_CONFIG_SCHEMAS.items()
}


def load_account_config(channel_type: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config with defaults filled in (push: a fresh VAPID pair when none is given);
    optional fields set to null are dropped.

    Raises marshmallow.ValidationError keyed by config field.
    """
    loaded = ACCOUNT_CONFIG_SCHEMAS[channel_type]().load(raw)
    return {name: value for name, value in loaded.items() if value is not None}
