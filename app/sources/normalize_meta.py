"""Meta Conversions-API events → normalized events.

A stored event is one element of a CAPI `data` array; its `event_name` is authoritative. Contact
fields in `user_data` (`em`, `ph`, `fn`, `ln`, `country`, ...) are, per Meta's parameter reference,
SHA-256 hex of a normalized form (email: trimmed and lower-cased; phone: digits only, country code
included, no `+`; state `st`: its code in lower case), one value or a list of them. Gateways
sometimes send plain values despite that, so a value counts as a hash by its shape (64 hex digits)
and anything else is read as plain.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import phonenumbers

from app.sources import geo_zones
from app.sources.normalize import (
    EVENT_PLACE,
    DerivedZone,
    Identity,
    NormalizedEvent,
    as_list,
    build_identity,
    count_units,
    derive_zone,
    first_text,
    get_dict,
    get_objects,
    id_list,
    is_sha256_hex,
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
    "PageView": "page_viewed",
    "ViewContent": "product_viewed",
    "AddToCart": "added_to_cart",
    "InitiateCheckout": "checkout_started",
    "Purchase": "order_placed",
    "Lead": "lead",
}
# `country` is hashed like the rest, but there are only a few hundred codes, so each hash is known
# and the country (useful for audiences and for reading phone numbers) can be recovered.
_COUNTRY_BY_HASH: dict[str, str] = {
    hashlib.sha256(code.lower().encode("ascii")).hexdigest(): code for code in phonenumbers.SUPPORTED_REGIONS
}


def map_event(event_type: str, payload: dict[str, Any]) -> NormalizedEvent:
    name = required_name(payload, "event_name")
    user = get_dict(payload, "user_data")
    custom = get_dict(payload, "custom_data")
    identity = _user_identity(user)

    contents = get_objects(custom, "contents")
    content_ids = id_list(as_list(custom.get("content_ids"))) or id_list(c.get("id") for c in contents)
    normalized = without_none({
        "value": parse_amount(custom.get("value"), "custom_data.value"),
        "currency": normalize_currency(custom.get("currency")),
        "orderId": text(custom.get("order_id")),
        "productIds": content_ids or None,
        "itemCount": parse_count(custom.get("num_items")) if custom.get("num_items") is not None
        else count_units(contents),
        "url": text(payload.get("event_source_url")),
    })
    return NormalizedEvent(
        type=type_for(name, EVENT_TYPES),
        original_name=name,
        occurred_at=parse_epoch(payload.get("event_time"), "event_time", 1),
        properties=provider_properties(custom, normalized),
        identity=identity,
        zone=_zone(identity.profile.get("country"), user.get("st")),
    )


# The user_data fields an identity is read from. A customer's events carry the same ones event
# after event, so identities are memoized on them (an Identity is never changed) when they are all text,
# as Meta sends them: only then is equal the same (1 == 1.0 == True, but not as identifiers).
_IDENTITY_FIELDS = ("em", "ph", "fn", "ln", "external_id", "country")


def _user_identity(user: dict[str, Any]) -> Identity:
    # Plain loops, no generators: this runs for every Meta event.
    fields = []
    all_text = True
    for value in map(user.get, _IDENTITY_FIELDS):
        if type(value) is list:
            value = tuple(value)
            for item in value:
                if type(item) is not str:
                    all_text = False
        elif value is not None and type(value) is not str:
            all_text = False
        fields.append(value)
    return _identity(tuple(fields)) if all_text else _identity.__wrapped__(tuple(fields))


@lru_cache(maxsize=65536)
def _identity(fields: tuple[Any, ...]) -> Identity:
    em, ph, fn, ln, external_id, country = fields
    emails, email_hashes = _split_hashed(em)
    phones, phone_hashes = _split_hashed(ph)
    first_names, _ = _split_hashed(fn)  # a hashed name cannot be shown to anyone
    last_names, _ = _split_hashed(ln)
    return build_identity(
        emails=emails,
        email_hashes=email_hashes,
        # Meta's plain phone form is the digits with the country code, so it gets its `+` back.
        phones=["+" + phone if phone.isdigit() else phone for phone in phones],
        phone_hashes=phone_hashes,
        external_ids={"metaExternalId": first_text(as_list(external_id))},
        profile={
            "firstName": first_text(first_names),
            "lastName": first_text(last_names),
            "country": _country(country),
        },
    )


def _split_hashed(value: object) -> tuple[list[str], list[str]]:
    """(plain values, SHA-256 hashes) of a one-or-many user_data field."""
    plain: list[str] = []
    hashed: list[str] = []
    for item in as_list(value):
        item_text = text(item)
        if item_text:
            (hashed if is_sha256_hex(item_text) else plain).append(item_text)
    return plain, hashed


def _zone(country: str | None, states: object) -> DerivedZone | None:
    """The zone of the country and state (`st`); a hashed state is recognised among the region codes
    `geo_zones` knows for that country, the way the country itself is."""
    if country is None:
        return None
    plain, hashed = _split_hashed(states)
    known = _regions_by_hash(country)
    regions = [*plain, *filter(None, (known.get(value.lower()) for value in hashed))]
    return derive_zone(EVENT_PLACE, [(country, region) for region in regions] or [(country, None)])


@lru_cache(maxsize=64)
def _regions_by_hash(country: str) -> dict[str, str]:
    return {hashlib.sha256(code.lower().encode("ascii")).hexdigest(): code
            for code in geo_zones.region_codes(country)}


def _country(value: object) -> str | None:
    for item in as_list(value):
        item_text = text(item)
        if item_text:
            code = _COUNTRY_BY_HASH.get(item_text.lower()) or normalize_country(item_text)
            if code:
                return code
    return None
