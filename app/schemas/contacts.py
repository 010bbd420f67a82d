"""Schemas for contacts: output, create / update input, list filters, unsubscribe, and import bodies."""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from app.channels.catalogue import CHANNEL_TYPES
from app.errors import HeraldError, ValidationFailed
from app.models.contacts import CONSENT_VALUES
from app.schemas.base import BoundedList, CamelSchema, UtcDateTime, iana_zone, no_nul, postgres_json
from app.sources.normalize import EXTERNAL_ID_KEYS, normalize_email, normalize_phone

EMAIL_MAX = 254
NAME_MAX = 100
ATTRIBUTE_KEY_MAX = 100
EXTERNAL_ID_MAX = 255
ENDPOINT_MAX = 2048
PUSH_SUBSCRIPTIONS_MAX = 20
SEARCH_MAX = 200
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


# --- Output -------------------------------------------------------------------------------------

class PushSubscriptionSchema(CamelSchema):
    """A browser push subscription as the API shows it: never its encryption keys."""

    id = fields.UUID()
    endpoint = fields.String()
    created_at = UtcDateTime()


class ContactSchema(CamelSchema):
    id = fields.UUID()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True, metadata={"description": "E.164."})
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)
    attributes = fields.Dict()
    external_ids = fields.Dict()
    consent = fields.Dict(metadata={"description": "Channel → subscribed | unsubscribed | bounced | complained."})
    push_subscriptions = fields.List(fields.Nested(PushSubscriptionSchema))
    timezone = fields.Function(lambda contact: contact.timezone_in_force()[0], metadata={
        "description": "IANA zone the contact's local times are reckoned in."})
    timezone_source = fields.Function(lambda contact: contact.timezone_in_force()[1], metadata={
        "description": "contact (given by the merchant), shopify (the Shopify customer's default address), "
                       "event (a country and region events named), phone (the number's region, where it "
                       "has one zone) or merchant_default (the settings' timezone)."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


# --- Input fields -------------------------------------------------------------------------------

def _text(maximum: int, **kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(max=maximum), no_nul], **kwargs)


class ContactEmail(fields.String):
    """An address kept as the merchant gave it (trimmed), accepted when it is a valid address."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        email = super()._deserialize(value, attr, data, **kwargs).strip()
        if len(email) > EMAIL_MAX or normalize_email(email) is None:
            raise ValidationError("Not a valid email address.")
        return email


class E164Phone(fields.String):
    """A phone number in international form, stored as E.164."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        phone = normalize_phone(super()._deserialize(value, attr, data, **kwargs))
        if phone is None:
            raise ValidationError("Not a valid phone number; give it in international form, e.g. +14155550123.")
        return phone


def _base64url_bytes(length: int) -> Callable[[str], None]:
    def check(value: str) -> None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)) if _BASE64URL.fullmatch(value) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != length:
            raise ValidationError(f"Must be {length} bytes, base64url-encoded.")

    return check


def _distinct_endpoints(subscriptions: list[dict[str, str]]) -> None:
    endpoints = [subscription["endpoint"] for subscription in subscriptions]
    if len(set(endpoints)) != len(endpoints):
        raise ValidationError("Each endpoint may appear once.")


class PushKeysSchema(CamelSchema):
    p256dh = fields.String(required=True, validate=_base64url_bytes(65))
    auth = fields.String(required=True, validate=_base64url_bytes(16))


class PushSubscriptionInputSchema(CamelSchema):
    """The browser's `PushSubscription.toJSON()`."""

    endpoint = fields.Url(required=True, schemes={"https"}, validate=validate.Length(max=ENDPOINT_MAX))
    # Sent by browsers; push services report expiry by refusing the endpoint, so it is not kept.
    expiration_time = fields.Float(allow_none=True, load_only=True)
    keys = fields.Nested(PushKeysSchema, required=True)

    @post_load
    def flatten(self, data: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        return {"endpoint": data["endpoint"], **data["keys"]}


class ContactUpdateSchema(CamelSchema):
    email = ContactEmail(allow_none=True)
    timezone = fields.String(allow_none=True, validate=iana_zone, metadata={
        "description": "The contact's own IANA zone; null: derived again (Shopify address or events, "
                       "phone region, else the merchant's)."})
    phone = E164Phone(allow_none=True, metadata={"description": "International form; stored as E.164."})
    first_name = _text(NAME_MAX, allow_none=True)
    last_name = _text(NAME_MAX, allow_none=True)
    attributes = fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=ATTRIBUTE_KEY_MAX)]),
        values=fields.Raw(allow_none=True),
        validate=postgres_json,
        metadata={"description": "Any JSON values, at most 100 keys."},
    )
    external_ids = fields.Dict(
        keys=fields.String(validate=validate.OneOf(EXTERNAL_ID_KEYS)),
        values=fields.String(validate=[validate.Length(min=1, max=EXTERNAL_ID_MAX), no_nul]),
    )
    consent = fields.Dict(
        keys=fields.String(validate=validate.OneOf(CHANNEL_TYPES)),
        values=fields.String(validate=validate.OneOf(CONSENT_VALUES)),
    )
    push_subscriptions = BoundedList(
        fields.Nested(PushSubscriptionInputSchema), max_length=PUSH_SUBSCRIPTIONS_MAX, validate=_distinct_endpoints,
    )


class ContactCreateSchema(ContactUpdateSchema):
    @validates_schema
    def needs_an_address(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("email") and not data.get("phone"):
            message = "A contact needs an email address or a phone number."
            raise ValidationError({"email": [message], "phone": [message]})


class UnsubscribeSchema(CamelSchema):
    channels = BoundedList(
        fields.String(validate=validate.OneOf(CHANNEL_TYPES)),
        min_length=1, max_length=len(CHANNEL_TYPES),
        metadata={"description": "Channels to opt out of; every channel when omitted."},
    )


class _ContactQueryBase(CamelSchema):
    email = _text(EMAIL_MAX, metadata={"description": "Exact address, any case."})
    phone = E164Phone()
    q = _text(SEARCH_MAX, metadata={"description": "Substring of email, phone, first or last name, any case."})

    @post_load
    def group_consent(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        consent = {channel: data.pop(f"consent_{channel}") for channel in CHANNEL_TYPES if f"consent_{channel}" in data}
        return {**data, "consent": consent} if consent else data


# One `consent.<channel>` filter per channel, e.g. `?consent.email=subscribed`.
ContactQuerySchema = type("ContactQuerySchema", (_ContactQueryBase,), {
    f"consent_{channel}": fields.String(data_key=f"consent.{channel}", validate=validate.OneOf(CONSENT_VALUES))
    for channel in CHANNEL_TYPES
})


# --- Import -------------------------------------------------------------------------------------

class ImportRowErrorSchema(CamelSchema):
    row = fields.Integer(metadata={"description": "1-based data row (CSV header not counted)."})
    errors = fields.Dict()


class ImportResultSchema(CamelSchema):
    created = fields.Integer()
    updated = fields.Integer()
    failed = fields.Integer()
    errors = fields.List(fields.Nested(ImportRowErrorSchema))


class UnsupportedImportType(HeraldError):
    status, code = 415, "unsupported_media_type"


def read_import_body(mimetype: str, charset: str | None, body: bytes) -> list[Any]:
    """The rows of an import: a JSON array of contact objects, or CSV (see `rows_from_csv`).

    Rows are returned unvalidated; each one is validated on its own so one bad row fails alone.
    """
    if mimetype == "text/csv":
        codec = charset or "utf-8"
        # Spreadsheets often start UTF-8 files with a byte-order mark; it is not part of the header.
        codec = "utf-8-sig" if codec.lower().replace("_", "-") in ("utf-8", "utf8") else codec
        try:
            text = body.decode(codec)
        except (LookupError, UnicodeDecodeError):
            raise ValidationFailed("The CSV file is not valid UTF-8 (or the given charset).") from None
        return rows_from_csv(text)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            rows = json.loads(body)
        except (ValueError, RecursionError):
            raise HeraldError("The body is not valid JSON.") from None
        if not isinstance(rows, list):
            raise ValidationFailed("Expected a JSON array of contacts.")
        return rows
    raise UnsupportedImportType("Send a JSON array (application/json) or a CSV file (text/csv).")


_CSV_PROFILE_COLUMNS = {"email": "email", "phone": "phone", "firstname": "firstName", "lastname": "lastName",
                        "timezone": "timezone"}


def rows_from_csv(text: str) -> list[dict[str, Any]]:
    """CSV with a header row → contact objects in the create shape.

    Columns `email`, `phone`, `firstName`, `lastName`, `timezone` (any case; spaces, `_` and `-`
    ignored) fill the profile, `consent.<channel>` columns the consent, and any other column becomes an attribute (text).
    Empty cells are left out. A file whose structure is broken is refused whole.
    """
    try:
        records = list(csv.reader(io.StringIO(text.rstrip("\r\n"))))
    except csv.Error as exc:
        raise ValidationFailed(f"The CSV file cannot be read: {exc}.") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise ValidationFailed("The CSV file needs a header row.")
    columns = _csv_columns(records[0])
    for number, cells in enumerate(records[1:], 1):
        if len(cells) > len(columns):
            raise ValidationFailed(f"Row {number} has more cells than the header has columns.")
    return [_csv_record(columns, cells) for cells in records[1:]]


def _csv_columns(header: list[str]) -> list[tuple[str | None, str]]:
    """Where each column's cells go: (None, field) for the profile, (group, key) for consent/attributes."""
    columns: list[tuple[str | None, str]] = []
    for position, raw in enumerate(header, 1):
        name = raw.strip()
        squashed = re.sub(r"[\s_-]", "", name).lower()
        if not name:
            raise ValidationFailed(f"Column {position} of the header has no name.")
        if squashed in _CSV_PROFILE_COLUMNS:
            columns.append((None, _CSV_PROFILE_COLUMNS[squashed]))
        elif squashed.startswith("consent."):
            channel = squashed.removeprefix("consent.")
            if channel not in CHANNEL_TYPES:
                raise ValidationFailed(f"Unknown consent column {name!r}; channels are {', '.join(CHANNEL_TYPES)}.")
            columns.append(("consent", channel))
        else:
            columns.append(("attributes", name))
    if len(set(columns)) != len(columns):
        raise ValidationFailed("The CSV header names a column twice.")
    return columns


def _csv_record(columns: list[tuple[str | None, str]], cells: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for (group, key), cell in zip(columns, cells):
        value = cell.strip()
        if not value:
            continue
        if group is None:
            record[key] = value
        else:
            record.setdefault(group, {})[key] = value.lower() if group == "consent" else value
    return record
