"""Shopify topics → normalized events.

Two payload shapes arrive under the same topics: REST webhook JSON (snake_case keys, numeric ids) and
GraphQL nodes pulled by sync (camelCase keys, `gid://shopify/Customer/123` ids, money under
`totalPriceSet.shopMoney`, lists as connections). Both read to the same result; ids always come out
as the numeric id string. What a payload holds follows from the topic's resource (`orders/*` is an
order whatever the action), while only the four topics SPEC names get a non-`custom` type.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from app.sources.normalize import (
    EVENT_PLACE,
    SHOPIFY_ADDRESS,
    DerivedZone,
    Identity,
    NormalizedEvent,
    PoisonEvent,
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
    parse_iso_datetime,
    text,
    type_for,
    without_none,
)

TOPIC_TYPES: dict[str, str] = {
    "orders/create": "order_placed",
    "customers/create": "customer_created",
    "customers/update": "customer_updated",
    "checkouts/create": "checkout_started",
}
# Shopify marketing-consent states that are an explicit choice; the rest (not_subscribed, pending,
# invalid, redacted) say nothing SPEC's consent values can hold, so they are left out.
_CONSENT_STATES: dict[str, str] = {"subscribed": "subscribed", "unsubscribed": "unsubscribed"}
# channel: (the contact point holding its state now, the deprecated consent block), each as GraphQL
# and REST name it.
_CONSENT_FIELDS = (
    ("email", ("defaultEmailAddress", "default_email_address"), ("emailMarketingConsent", "email_marketing_consent")),
    ("sms", ("defaultPhoneNumber", "default_phone_number"), ("smsMarketingConsent", "sms_marketing_consent")),
)
_GID_PREFIX = "gid://shopify/"

Reading = tuple[dict[str, Any], Identity, dict[str, str], DerivedZone | None]


def map_event(topic: str, payload: dict[str, Any]) -> NormalizedEvent:
    if not isinstance(topic, str) or "/" not in topic.strip():
        raise PoisonEvent(f"Shopify topic must look like 'resource/action', got {topic!r}")
    topic = topic.strip()
    reader = _READERS.get(topic.split("/", 1)[0])
    properties, identity, consent, zone = reader(payload) if reader else ({}, Identity(), {}, None)
    return NormalizedEvent(
        type=type_for(topic, TOPIC_TYPES),
        original_name=topic,
        occurred_at=_occurred_at(topic, payload),
        properties=properties,
        identity=identity,
        consent=consent,
        zone=zone,
    )


def shopify_id(value: object, key: str) -> str | None:
    """The numeric id as a string, from a REST number or a GraphQL GID (`gid://shopify/Order/1?x=y`)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str):
        raw = value.strip()
        if raw.startswith(_GID_PREFIX):
            raw = raw.rsplit("/", 1)[-1].split("?", 1)[0]
        if raw.isascii() and raw.isdigit():
            return raw
    raise PoisonEvent(f"{key} is not a Shopify id: {value!r}")


def _read_order(payload: dict[str, Any]) -> Reading:
    properties = {
        "orderId": shopify_id(payload.get("id"), "id"),
        "orderName": text(payload.get("name")),
        **_money_and_items(payload),
    }
    return without_none(properties), *_buyer(payload)


def _read_checkout(payload: dict[str, Any]) -> Reading:
    properties = {
        "checkoutId": shopify_id(payload.get("id"), "id"),
        "checkoutToken": text(payload.get("token")),
        "checkoutUrl": text(payload.get(_key(payload, "abandoned_checkout_url", "abandonedCheckoutUrl"))),
        **_money_and_items(payload),
    }
    return without_none(properties), *_buyer(payload)


def _read_customer(payload: dict[str, Any]) -> Reading:
    properties = {"customerId": shopify_id(payload.get("id"), "id"), "tags": _tags(payload.get("tags")) or None}
    default_address = get_dict(payload, _key(payload, "default_address", "defaultAddress"))
    identity = _identity(payload, payload, buyer_addresses=[default_address], other_addresses=[])
    return without_none(properties), identity, _consent(payload), _zone(default_address, {})


def _tags(value: object) -> list[str]:
    # REST sends "vip, wholesale"; GraphQL sends a list.
    if isinstance(value, str):
        return id_list(value.split(","))
    return id_list(value) if isinstance(value, list) else []


def _read_consent_update(payload: dict[str, Any]) -> Reading:
    """customers_email_marketing_consent/update `{customer_id, email_address, email_marketing_consent}`
    and customers_marketing_consent/update `{id, phone, sms_marketing_consent}`."""
    customer_id = shopify_id(payload.get("customer_id", payload.get("id")), "customer_id")
    identity = build_identity(
        emails=[payload.get("email_address"), payload.get("email")], phones=[payload.get("phone")],
        external_ids={"shopifyCustomerId": customer_id}, profile={},
    )
    return without_none({"customerId": customer_id}), identity, _consent(payload), None


_READERS = {
    "orders": _read_order, "checkouts": _read_checkout, "customers": _read_customer,
    "customers_email_marketing_consent": _read_consent_update, "customers_marketing_consent": _read_consent_update,
}


def _buyer(payload: dict[str, Any]) -> tuple[Identity, dict[str, str], DerivedZone | None]:
    """Who placed an order or started a checkout, the consent their customer record carries, and
    the zone their addresses tell."""
    customer = get_dict(payload, "customer")
    billing = get_dict(payload, _key(payload, "billing_address", "billingAddress"))
    default_address = get_dict(customer, _key(customer, "default_address", "defaultAddress"))
    identity = _identity(
        payload,
        customer,
        buyer_addresses=[billing, default_address],
        # A shipping address may be a gift recipient's: it only tells the country (and no zone).
        other_addresses=[get_dict(payload, _key(payload, "shipping_address", "shippingAddress"))],
    )
    return identity, _consent(customer), _zone(default_address, billing)


def _identity(
    record: dict[str, Any],
    customer: dict[str, Any],
    *,
    buyer_addresses: list[dict[str, Any]],
    other_addresses: list[dict[str, Any]],
) -> Identity:
    newer_email = get_dict(customer, "defaultEmailAddress")  # GraphQL 2024-07+: email moved here
    newer_phone = get_dict(customer, "defaultPhoneNumber")
    names = [customer, *buyer_addresses]
    return build_identity(
        emails=[record.get("email"), record.get(_key(record, "contact_email", "contactEmail")),
                customer.get("email"), newer_email.get("emailAddress")],
        phones=[record.get("phone"), customer.get("phone"), newer_phone.get("phoneNumber"),
                *(address.get("phone") for address in buyer_addresses)],
        external_ids={"shopifyCustomerId": shopify_id(customer.get("id"), "customer.id")},
        profile={
            "firstName": first_text(n.get(_key(n, "first_name", "firstName")) for n in names),
            "lastName": first_text(n.get(_key(n, "last_name", "lastName")) for n in names),
            "country": next(filter(None, (_country(a) for a in [*buyer_addresses, *other_addresses])), None),
        },
    )


def _zone(default_address: dict[str, Any], billing: dict[str, Any]) -> DerivedZone | None:
    """The customer's default address speaks for them (`shopify`); else the order's billing address."""
    return (derive_zone(SHOPIFY_ADDRESS, [_place(default_address)])
            or derive_zone(EVENT_PLACE, [_place(billing)]))


def _place(address: dict[str, Any]) -> tuple[str | None, object]:
    return _country(address), address.get(_key(address, "province_code", "provinceCode"))


def _country(address: dict[str, Any]) -> str | None:
    for key in ("country_code", "countryCodeV2", "countryCode"):
        code = normalize_country(address.get(key))
        if code:
            return code
    return None


def _consent(customer: dict[str, Any]) -> dict[str, str]:
    consent: dict[str, str] = {}
    for channel, contact_point, deprecated in _CONSENT_FIELDS:
        state = _marketing_state(customer, contact_point)
        if state is None:
            state = _marketing_state(customer, deprecated)
        if state is None and channel == "email":
            state = _accepts_marketing(customer)
        value = _CONSENT_STATES.get(state) if state is not None else None
        if value:
            consent[channel] = value
    return consent


def _marketing_state(customer: dict[str, Any], keys: tuple[str, str]) -> str | None:
    """The lower-cased state in the first of `keys` that holds one."""
    for key in keys:
        block = get_dict(customer, key)
        state = next((block[name] for name in ("marketingState", "marketing_state", "state") if block.get(name)), None)
        if isinstance(state, str) and state.strip():
            return state.strip().lower()
    return None


def _accepts_marketing(customer: dict[str, Any]) -> str | None:
    # Before 2022-04 a single flag; false never said whether the customer had unsubscribed.
    return "subscribed" if customer.get("acceptsMarketing", customer.get("accepts_marketing")) is True else None


def _money_and_items(payload: dict[str, Any]) -> dict[str, Any]:
    amount_key = _key(payload, "total_price", "totalPrice")
    value = parse_amount(payload.get(amount_key), amount_key)
    currency = normalize_currency(payload.get(_key(payload, "currency", "currencyCode")))
    shop_money = get_dict(get_dict(payload, "totalPriceSet"), "shopMoney")
    if value is None:
        value = parse_amount(shop_money.get("amount"), "totalPriceSet.shopMoney.amount")
    currency = currency or normalize_currency(shop_money.get("currencyCode"))

    items = _line_items(payload)
    product_ids = id_list(
        shopify_id(item.get("product_id"), "line_items.product_id")
        or shopify_id(get_dict(item, "product").get("id"), "lineItems.product.id")
        for item in items
    )
    return {"value": value, "currency": currency, "productIds": product_ids or None, "itemCount": count_units(items)}


def _line_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    if payload.get("line_items") is not None:
        return get_objects(payload, "line_items")
    connection = payload.get("lineItems")
    if isinstance(connection, dict):
        if connection.get("edges") is not None:
            return [get_dict(edge, "node") for edge in get_objects(connection, "edges")]
        return get_objects(connection, "nodes")
    return get_objects(payload, "lineItems")


def _occurred_at(topic: str, payload: dict[str, Any]) -> datetime | None:
    created = parse_iso_datetime(payload.get(_key(payload, "created_at", "createdAt")), "created_at")
    updated = parse_iso_datetime(payload.get(_key(payload, "updated_at", "updatedAt")), "updated_at")
    # An update happened when the record changed, not when it was first made.
    if topic.endswith(("/update", "/updated")):
        return updated or created
    return created or updated


def _key(payload: dict[str, Any], snake: str, camel: str) -> str:
    """The key this payload's shape uses: REST snake_case or GraphQL camelCase."""
    return snake if payload.get(snake) is not None else camel
