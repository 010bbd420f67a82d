"""GA4 / Measurement-Protocol events from a GTM server container → normalized events.

A stored event is one MP event with its request envelope merged in (see `app.sources.normalize`):
`{"name", "params", "client_id", "user_id", "timestamp_micros", "user_properties", "user_data"}`.
Its `name` is authoritative.

Plain contact details may come in `params` (`email`, `phone`, ...), in gtag-style user-provided data
(`user_data` on the envelope or in `params`: `email_address`, `phone_number`,
`address: {first_name, last_name, country, region}`, each one value or a list) or in
`user_properties` (MP's `{"key": {"value": ...}}` or plain values). Where the user is comes from that
address, else from MP's `user_location` (`{"country_id": "US", "region_id": "US-CA"}`, ISO 3166).
MP's hashed fields (`sha256_email_address`, ...) are ignored: Google normalizes before hashing
differently from Meta (dots removed from Gmail addresses, `+` kept on phones), so they could never
match `Identity`'s Meta-rule hashes.
"""
from __future__ import annotations

from typing import Any

from app.sources.normalize import (
    EVENT_PLACE,
    NormalizedEvent,
    as_list,
    build_identity,
    count_units,
    derive_zone,
    first_text,
    get_dict,
    get_objects,
    id_list,
    normalize_country,
    normalize_currency,
    parse_amount,
    parse_epoch,
    provider_properties,
    required_name,
    text,
    type_for,
    without_none,
)

EVENT_TYPES: dict[str, str] = {
    "page_view": "page_viewed",
    "view_item": "product_viewed",
    "add_to_cart": "added_to_cart",
    "begin_checkout": "checkout_started",
    "purchase": "order_placed",
    "generate_lead": "lead",
}
_EMAIL_KEYS = ("email", "email_address")
_PHONE_KEYS = ("phone", "phone_number")
_NAME_KEYS = ("first_name", "last_name")
# Personal data stays out of the copied params: the identity carries what is needed of it.
_NOT_COPIED = frozenset({*_EMAIL_KEYS, *_PHONE_KEYS, *_NAME_KEYS, "user_data"})


def map_event(event_type: str, payload: dict[str, Any]) -> NormalizedEvent:
    name = required_name(payload, "name")
    params = get_dict(payload, "params")
    user_properties = _user_property_values(get_dict(payload, "user_properties"))
    user_data = get_dict(payload, "user_data") or get_dict(params, "user_data")
    addresses = [a for a in as_list(user_data.get("address")) if isinstance(a, dict)]
    contact_sources = (params, user_data, user_properties)
    profile_sources = (*addresses, user_properties)

    identity = build_identity(
        emails=[v for source in contact_sources for key in _EMAIL_KEYS for v in as_list(source.get(key))],
        phones=[v for source in contact_sources for key in _PHONE_KEYS for v in as_list(source.get(key))],
        external_ids={"ga4UserId": payload.get("user_id"), "ga4ClientId": payload.get("client_id")},
        profile={
            "firstName": first_text(source.get("first_name") for source in profile_sources),
            "lastName": first_text(source.get("last_name") for source in profile_sources),
            "country": next(filter(None, (normalize_country(s.get("country")) for s in profile_sources)), None),
        },
    )

    # Optional and only a hint: a malformed one is ignored rather than spoiling the event.
    location = payload.get("user_location")
    location = location if isinstance(location, dict) else {}
    places = [*((a.get("country"), a.get("region")) for a in addresses),
              (location.get("country_id"), location.get("region_id"))]

    items = get_objects(params, "items")
    normalized = without_none({
        "value": parse_amount(params.get("value"), "params.value"),
        "currency": normalize_currency(params.get("currency")),
        "orderId": text(params.get("transaction_id")),
        "productIds": id_list(item.get("item_id") for item in items) or None,
        "itemCount": count_units(items),
        "url": text(params.get("page_location")),
    })
    return NormalizedEvent(
        type=type_for(name, EVENT_TYPES),
        original_name=name,
        occurred_at=parse_epoch(payload.get("timestamp_micros"), "timestamp_micros", 1_000_000),
        properties=provider_properties(params, normalized, exclude=_NOT_COPIED),
        identity=identity,
        zone=derive_zone(EVENT_PLACE, places),
    )


def _user_property_values(user_properties: dict[str, Any]) -> dict[str, Any]:
    """MP wraps each user property as `{"value": ...}`; GTM may pass them flat."""
    return {
        key: value.get("value") if isinstance(value, dict) else value
        for key, value in user_properties.items()
    }
