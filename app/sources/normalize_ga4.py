"""GA4 / Measurement-Protocol events from a GTM server container → normalized events.

A stored event is either
- one MP event with its request envelope merged in (see `app.sources.normalize`): `{"name",
  "params", "client_id" | "app_instance_id", "user_id", "timestamp_micros", "user_properties",
  "user_data", "non_personalized_ads", ...}`, the event's own fields (its `timestamp_micros`) over
  the request's; its `name` is authoritative; or
- the event data of a server-side GTM container, as its tag forwarded it: `{"event_name", "client_id",
  "user_id", "user_data", "ip_override", "user_agent", "x-ga-mp2-user_properties", "x-ga-...",
  <the event's parameters beside them>}`; it is read as the MP event it stands for (`_as_mp_event`).

The device id is `client_id` (web streams) or `app_instance_id` (app streams); both become the
`ga4ClientId` external id. Plain contact details may come in `params` (`email`, `phone`, ...), in
gtag-style user-provided data (`user_data` on the envelope or in `params`: `email_address`,
`phone_number`, `address: {first_name, last_name, country, region}`, each one value or a list) or in
`user_properties` (MP's `{"key": {"value": ...}}` or plain values); the other user properties, and
`non_personalized_ads`, are copied into the properties beside the params (a param wins a clash).
Where the user is comes from that address, else from MP's `user_location` (`{"country_id": "US",
"region_id": "US-CA"}`, ISO 3166). An item without `quantity` counts as one unit, as GA4 counts it.
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
    derive_zone,
    first_text,
    get_dict,
    get_objects,
    id_list,
    normalize_country,
    normalize_currency,
    parse_amount,
    parse_count,
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
# The envelope keys of server-side GTM event data; the rest of it are the event's parameters.
_EVENT_DATA_ENVELOPE = frozenset({
    "event_name", "client_id", "app_instance_id", "user_id", "user_data", "timestamp_micros", "user_location",
    "ip_override", "user_agent", "non_personalized_ads",
})
_GTM_USER_PROPERTIES = "x-ga-mp2-user_properties"


def map_event(event_type: str, payload: dict[str, Any]) -> NormalizedEvent:
    payload = _as_mp_event(payload)
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
        external_ids={"ga4UserId": payload.get("user_id"),
                      "ga4ClientId": first_text((payload.get("client_id"), payload.get("app_instance_id")))},
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
        "itemCount": _units(items),
        "url": text(params.get("page_location")),
    })
    return NormalizedEvent(
        type=type_for(name, EVENT_TYPES),
        original_name=name,
        occurred_at=parse_epoch(payload.get("timestamp_micros"), "timestamp_micros", 1_000_000),
        properties=provider_properties(_user_scoped(payload, user_properties) | params, normalized,
                                       exclude=_NOT_COPIED),
        identity=identity,
        zone=derive_zone(EVENT_PLACE, places),
    )


def _user_property_values(user_properties: dict[str, Any]) -> dict[str, Any]:
    """MP wraps each user property as `{"value": ...}`; GTM may pass them flat."""
    return {
        key: value.get("value") if isinstance(value, dict) else value
        for key, value in user_properties.items()
    }


def _user_scoped(payload: dict[str, Any], user_properties: dict[str, Any]) -> dict[str, Any]:
    """User properties and the request's ad-personalization flag, copied beside the params."""
    scoped = dict(user_properties)
    if isinstance(payload.get("non_personalized_ads"), bool):
        scoped["non_personalized_ads"] = payload["non_personalized_ads"]
    return scoped


def _units(items: list[dict[str, Any]]) -> int | None:
    """Units across the items; GA4 counts an item without `quantity` as one."""
    if not items:
        return None
    counts = (1 if item.get("quantity") is None else parse_count(item.get("quantity")) for item in items)
    return sum(count for count in counts if count and count > 0)


def _as_mp_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Server-side GTM event data read as the MP event it stands for (module doc); an MP event as is."""
    if "name" in payload or "event_name" not in payload:
        return payload
    return {
        "name": payload["event_name"],
        "params": {key: value for key, value in payload.items()
                   if key not in _EVENT_DATA_ENVELOPE and not key.startswith("x-")},
        "client_id": payload.get("client_id") or payload.get("x-ga-js_client_id"),
        **{key: payload[key] for key in _EVENT_DATA_ENVELOPE - {"event_name", "client_id"} if key in payload},
        "user_properties": payload.get(_GTM_USER_PROPERTIES),
    }
