"""Provider events → Herald's one vocabulary of events (SPEC §6 "Normalized event types").

Pure code: no database, no Flask. Event processing reads a `data_events` row and calls
`normalize(source.source_type, row.event_type, row.event_data)`. The answer says which normalized type
the event is, when it happened, what it was about (`properties`), who did it (`identity`) and any
explicit marketing consent it carries. A payload that cannot be read at all raises `PoisonEvent`
(a `ValueError`) so that processing quarantines the row instead of retrying it forever.

Stored `eventData` per source type (the provider mappings live in `normalize_shopify`,
`normalize_meta` and `normalize_ga4`; this module holds what they share):

- `shopify`: the webhook JSON (REST snake_case shape) or a node pulled by sync (GraphQL camelCase
  shape, ids as `gid://shopify/Customer/123`); `eventType` is the topic, e.g. `orders/create`.
- `facebook_pixel`: one element of a Conversions-API `data` array. Its `event_name` is authoritative.
- `gtm`: one GA4 Measurement-Protocol event with its request envelope merged in (the event's own
  fields over the request's): `{"name": str, "params": {...}, "client_id" | "app_instance_id": str,
  "user_id": str | None, "timestamp_micros": int | None, "user_properties": {"key": {"value": ...}} |
  None, "user_data": {...} | None, ...}`; its `name` is authoritative. Or the event data a server-side
  GTM container forwarded, `{"event_name": str, ...}` (see `normalize_ga4`).

For Meta and GA4 the row's `eventType` is a copy of the payload's name, so the payload wins.

`properties` keys, each present only when the payload has it: `value` (float), `currency` (upper-case
ISO 4217), `orderId`, `orderName`, `checkoutId`, `checkoutToken`, `checkoutUrl`, `customerId`, `tags`
(list of str), `productIds` (list of str), `itemCount` (int), `url`. Meta `custom_data` and GA4
`params` entries whose values are JSON scalars (or lists of them) are copied next to these under their
own names, so audience filters can reach custom properties (`{"content_type": "product"}`). The
normalized key names are reserved: a provider `value` or `currency` that did not normalize (e.g. an
empty string) is dropped rather than copied, so `value` is always a float. Identity fields (email,
phone) are never copied there. Shopify payloads are not copied: they are large and full of
addresses, and the `data_events` row keeps them anyway.

`zone` is the IANA timezone the payload's place implies (`app.sources.geo_zones`: only where the
country, and the region where the country needs one, settle it), with where it was read: `shopify`
for the Shopify customer's default address, `event` for any other place an event names (an order's
billing address, GA4's `user_location` or user-provided address, Meta's `country` and `st`).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from app.sources import geo_zones

NORMALIZED_TYPES: tuple[str, ...] = (
    "page_viewed", "product_viewed", "added_to_cart", "checkout_started", "order_placed",
    "customer_created", "customer_updated", "lead", "custom",
)
EXTERNAL_ID_KEYS: tuple[str, ...] = ("shopifyCustomerId", "ga4UserId", "ga4ClientId", "metaExternalId")
PROPERTY_KEYS: frozenset[str] = frozenset({
    "value", "currency", "orderId", "orderName", "checkoutId", "checkoutToken", "checkoutUrl", "customerId",
    "tags", "productIds", "itemCount", "url",
})

# Where a derived zone was read (module doc).
SHOPIFY_ADDRESS = "shopify"
EVENT_PLACE = "event"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1)
_JSON_SCALARS = (str, int, float, bool)


class PoisonEvent(ValueError):
    """The payload cannot be normalized at all; retrying will not help, so quarantine it."""


@dataclass(frozen=True)
class Identity:
    """Who did it. Hashes follow Meta's rule and are derived from the plain value whenever it is
    known, so an event that only carries a hash can still be matched to a contact."""

    email: str | None = None
    email_sha256: str | None = None
    phone: str | None = None  # E.164
    phone_sha256: str | None = None
    external_ids: dict[str, str] = field(default_factory=dict)  # keys among EXTERNAL_ID_KEYS
    profile: dict[str, str] = field(default_factory=dict)  # firstName, lastName, country (alpha-2)

    @property
    def is_empty(self) -> bool:
        """True when nothing here can tie the event to a contact (a profile alone cannot)."""
        return not (self.email or self.email_sha256 or self.phone or self.phone_sha256 or self.external_ids)

    @cached_property
    def keys(self) -> frozenset[tuple[str, str]]:
        """Every (kind, value) its contact can be found under (contact_identity.identity_keys), worked
        out once: an identity never changes, and a customer's events share one (normalize_meta)."""
        from app.services.contact_identity import identity_keys  # the contacts' own rule

        return frozenset(identity_keys(self.email, self.phone, self.external_ids, self.email_sha256,
                                       self.phone_sha256))


@dataclass(frozen=True)
class DerivedZone:
    zone: str  # IANA name
    source: str  # SHOPIFY_ADDRESS or EVENT_PLACE


@dataclass(frozen=True)
class NormalizedEvent:
    type: str  # one of NORMALIZED_TYPES
    original_name: str  # the provider's own name, kept for `custom` and for audits
    occurred_at: datetime | None = None  # naive UTC, from the payload; None when it has none
    properties: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, keys in module doc
    identity: Identity = field(default_factory=Identity)
    consent: dict[str, str] = field(default_factory=dict)  # channel → subscribed | unsubscribed
    zone: DerivedZone | None = None  # where the contact is, as a timezone (module doc)

    def __post_init__(self) -> None:
        if self.type not in NORMALIZED_TYPES:
            raise ValueError(f"unknown normalized event type {self.type!r}")


@lru_cache(maxsize=1)
def _mappers() -> dict[str, Callable[[str, dict[str, Any]], NormalizedEvent]]:
    # The provider modules import this module's dataclasses and rules; importing them here, on the
    # first call, keeps either import order free of a cycle.
    from app.sources import normalize_ga4, normalize_meta, normalize_shopify

    return {
        "shopify": normalize_shopify.map_event,
        "facebook_pixel": normalize_meta.map_event,
        "gtm": normalize_ga4.map_event,
    }


def normalize(source_type: str, event_type: str, event_data: dict[str, Any]) -> NormalizedEvent:
    """Normalize one stored provider event; raises PoisonEvent when it cannot be read."""
    mapper = _mappers().get(source_type)
    if mapper is None:
        raise PoisonEvent(f"unknown source type {source_type!r}")
    if not isinstance(event_data, dict):
        raise PoisonEvent(f"{source_type} {event_type!r}: eventData must be a JSON object, got {_kind(event_data)}")
    try:
        return mapper(event_type, event_data)
    except PoisonEvent as exc:
        # One place adds the context, so each rule below can say only what is wrong.
        raise PoisonEvent(f"{source_type} {event_type!r}: {exc}") from None


def type_for(name: str, table: Mapping[str, str]) -> str:
    """The normalized type for a provider name; SPEC: anything unmapped is `custom`."""
    return table.get(name, "custom")


def required_name(payload: Mapping[str, Any], key: str) -> str:
    name = payload.get(key)
    if not isinstance(name, str) or not name.strip():
        raise PoisonEvent(f"{key} is missing or not a string")
    return name.strip()


# --- Contact fields ---------------------------------------------------------------------------

# The same customers come back event after event: these pure functions are memoized.
@lru_cache(maxsize=65536)
def normalize_email(value: str) -> str | None:
    """Lower-cased, stripped, syntactically valid address; anything else is None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        # Deliverability needs DNS: too slow and flaky for event processing.
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()


@lru_cache(maxsize=65536)
def normalize_phone(value: str, region: str | None = None) -> str | None:
    """E.164 for a valid number. A national number needs the payload's country as `region`;
    without one only international `+…` input is accepted, because guessing a country would tie
    events to the wrong contact."""
    if not isinstance(value, str) or not value.strip():
        return None
    raw = value.strip()
    country = normalize_country(region)
    if country is None and not raw.startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(raw, country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_country(value: object) -> str | None:
    """ISO 3166-1 alpha-2, upper case."""
    if not isinstance(value, str):
        return None
    code = value.strip()
    return code.upper() if len(code) == 2 and code.isascii() and code.isalpha() else None


def normalize_currency(value: object) -> str | None:
    """ISO 4217, upper case."""
    if not isinstance(value, str):
        return None
    code = value.strip()
    return code.upper() if len(code) == 3 and code.isascii() and code.isalpha() else None


@lru_cache(maxsize=65536)
def sha256_email(email: str) -> str:
    """Meta's rule: trim, lower-case, SHA-256 hex."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


@lru_cache(maxsize=65536)
def sha256_phone(e164: str) -> str:
    """Meta's rule: digits only, country code included, no `+`, SHA-256 hex."""
    return hashlib.sha256(re.sub(r"\D", "", e164).encode("ascii")).hexdigest()


def is_sha256_hex(value: object) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value.strip().lower()) is not None


def build_identity(
    *,
    emails: Iterable[object] = (),
    phones: Iterable[object] = (),
    email_hashes: Iterable[object] = (),
    phone_hashes: Iterable[object] = (),
    external_ids: Mapping[str, object] | None = None,
    profile: Mapping[str, object] | None = None,
) -> Identity:
    """The one identity rule for every provider: candidates come in order of trust, the first valid
    one wins, and the profile's country is the only region a national phone number is read in."""
    clean_profile: dict[str, str] = {}
    for key in ("firstName", "lastName"):
        name = text((profile or {}).get(key))
        if name:
            clean_profile[key] = name
    country = normalize_country((profile or {}).get("country"))
    if country:
        clean_profile["country"] = country

    email = _first(normalize_email(v) for v in emails if isinstance(v, str))
    phone = _first(normalize_phone(v, country) for v in phones if isinstance(v, str))
    ids: dict[str, str] = {}
    for key, raw in (external_ids or {}).items():
        if key not in EXTERNAL_ID_KEYS:
            raise ValueError(f"unknown external id key {key!r}")
        value = text(raw)
        if value:
            ids[key] = value
    return Identity(
        email=email,
        email_sha256=sha256_email(email) if email else _first_hash(email_hashes),
        phone=phone,
        phone_sha256=sha256_phone(phone) if phone else _first_hash(phone_hashes),
        external_ids=ids,
        profile=clean_profile,
    )


def derive_zone(source: str, places: Iterable[tuple[object, object]]) -> DerivedZone | None:
    """The zone of (country, region) places in order of trust. The first place with a country names
    it; later places of the same country may only add the region it lacked."""
    country: str | None = None
    for raw_country, raw_region in places:
        code = normalize_country(raw_country)
        if code is None or (country is not None and code != country):
            continue
        country = code
        zone = geo_zones.zone_for(code, text(raw_region))
        if zone is not None:
            return DerivedZone(zone, source)
    return None


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _first_hash(values: Iterable[object]) -> str | None:
    return _first(v.strip().lower() for v in values if isinstance(v, str) and is_sha256_hex(v))


# --- Reading payloads -------------------------------------------------------------------------
# Missing keys are normal; a key holding the wrong kind of value means the payload is corrupt.

def get_dict(container: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PoisonEvent(f"{key} must be an object, got {_kind(value)}")
    return value


def get_objects(container: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A list of objects (line items, contents, items)."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise PoisonEvent(f"{key} must be a list of objects")
    return value


def as_list(value: object) -> list[Any]:
    """Meta and GA4 allow one value or a list of them."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def text(value: object) -> str | None:
    """A non-empty stripped string; integers (numeric ids) become strings."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def first_text(values: Iterable[object]) -> str | None:
    return next(filter(None, (text(v) for v in values)), None)


def without_none(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in properties.items() if v is not None}


def id_list(values: Iterable[object]) -> list[str]:
    """Ids as strings, first occurrence kept, blanks dropped."""
    seen: dict[str, None] = {}
    for value in values:
        key = text(value)
        if key:
            seen.setdefault(key, None)
    return list(seen)


def parse_amount(value: object, key: str) -> float | None:
    """Money as a float. Providers send numbers or decimal strings; anything else is corrupt."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PoisonEvent(f"{key} is not a number: {value!r}")
    try:
        amount = float(value)
    except ValueError:
        raise PoisonEvent(f"{key} is not a number: {value!r}") from None
    if not math.isfinite(amount):
        raise PoisonEvent(f"{key} is not a finite number: {value!r}")
    return amount


def parse_count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return None


def count_units(items: list[dict[str, Any]]) -> int | None:
    """Units across line items (`quantity` in Shopify, GA4 and Meta alike); None without items."""
    if not items:
        return None
    return sum(q for q in (parse_count(item.get("quantity")) for item in items) if q and q > 0)


def parse_iso_datetime(value: object, key: str) -> datetime | None:
    """ISO 8601 → naive UTC; a timestamp without an offset is taken as UTC already."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PoisonEvent(f"{key} is not an ISO 8601 timestamp: {value!r}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PoisonEvent(f"{key} is not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def parse_epoch(value: object, key: str, units_per_second: int) -> datetime | None:
    """Unix time (seconds for Meta, microseconds for GA4) → naive UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PoisonEvent(f"{key} is not a unix timestamp: {value!r}")
    try:
        number = _epoch_number(value)
        # Integer arithmetic keeps GA4's microseconds exact.
        micros = number * 1_000_000 // units_per_second if isinstance(number, int) \
            else round(number * 1_000_000 / units_per_second)
        return _EPOCH + timedelta(microseconds=micros)
    except (ValueError, OverflowError):
        raise PoisonEvent(f"{key} is not a usable unix timestamp: {value!r}") from None


def _epoch_number(value: int | float | str) -> int | float:
    if isinstance(value, str):
        raw = value.strip()
        value = int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    return value


def provider_properties(
    raw: Mapping[str, Any], normalized: Mapping[str, Any], exclude: Collection[str] = ()
) -> dict[str, Any]:
    """A provider's own scalar properties with the normalized ones laid over them (module doc)."""
    copied: dict[str, Any] = {}
    for key, value in raw.items():
        if key in exclude or key in PROPERTY_KEYS or not isinstance(key, str):
            continue
        if _is_json_scalar(value) or (isinstance(value, list) and all(_is_json_scalar(v) for v in value)):
            copied[key] = value
    return {**copied, **normalized}


def _is_json_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, _JSON_SCALARS)


def _kind(value: object) -> str:
    return type(value).__name__
