"""Provider event normalization (SPEC §6): pure functions, no database or app needed."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import pytest

from app.sources.normalize import (
    NORMALIZED_TYPES,
    Identity,
    NormalizedEvent,
    PoisonEvent,
    normalize,
    normalize_email,
    normalize_phone,
    sha256_email,
    sha256_phone,
)
from app.sources.normalize_shopify import shopify_id

# Examples from Meta's customer-information-parameters reference.
META_EMAIL_HASH = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"  # john_smith@gmail.com
META_PHONE_HASH = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  # 16505551212


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def assert_json_safe(event: NormalizedEvent) -> None:
    assert json.loads(json.dumps(event.properties)) == event.properties
    json.dumps(event.consent)
    json.dumps(event.identity.external_ids)
    json.dumps(event.identity.profile)


# --- Vocabulary ---------------------------------------------------------------------------------

def test_normalized_types_are_specs_vocabulary() -> None:
    assert NORMALIZED_TYPES == (
        "page_viewed", "product_viewed", "added_to_cart", "checkout_started", "order_placed",
        "customer_created", "customer_updated", "lead", "custom",
    )


def test_normalized_event_refuses_a_type_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError):
        NormalizedEvent(type="purchase", original_name="purchase")


def test_normalized_event_is_frozen() -> None:
    event = NormalizedEvent(type="custom", original_name="x")
    with pytest.raises(AttributeError):
        event.type = "lead"  # type: ignore[misc]


SHOPIFY_BODIES = {
    "orders/create": {"id": 1},
    "customers/create": {"id": 2},
    "customers/update": {"id": 2},
    "checkouts/create": {"id": 3},
}


@pytest.mark.parametrize(("source", "name", "expected"), [
    ("shopify", "orders/create", "order_placed"),
    ("shopify", "customers/create", "customer_created"),
    ("shopify", "customers/update", "customer_updated"),
    ("shopify", "checkouts/create", "checkout_started"),
    ("facebook_pixel", "PageView", "page_viewed"),
    ("facebook_pixel", "ViewContent", "product_viewed"),
    ("facebook_pixel", "AddToCart", "added_to_cart"),
    ("facebook_pixel", "InitiateCheckout", "checkout_started"),
    ("facebook_pixel", "Purchase", "order_placed"),
    ("facebook_pixel", "Lead", "lead"),
    ("gtm", "page_view", "page_viewed"),
    ("gtm", "view_item", "product_viewed"),
    ("gtm", "add_to_cart", "added_to_cart"),
    ("gtm", "begin_checkout", "checkout_started"),
    ("gtm", "purchase", "order_placed"),
    ("gtm", "generate_lead", "lead"),
])
def test_every_spec_mapping(source: str, name: str, expected: str) -> None:
    payload: dict[str, Any] = {
        "shopify": SHOPIFY_BODIES.get(name, {}),
        "facebook_pixel": {"event_name": name},
        "gtm": {"name": name},
    }[source]
    event = normalize(source, name, payload)
    assert event.type == expected
    assert event.original_name == name


@pytest.mark.parametrize(("source", "name", "payload"), [
    ("shopify", "orders/paid", {"id": 1}),
    ("shopify", "checkouts/update", {"id": 3}),
    ("shopify", "customers/delete", {"id": 2}),
    ("shopify", "products/create", {"id": 4}),
    ("facebook_pixel", "CompleteRegistration", {"event_name": "CompleteRegistration"}),
    ("facebook_pixel", "purchase", {"event_name": "purchase"}),  # Meta's names are case-sensitive
    ("gtm", "sign_up", {"name": "sign_up"}),
    ("gtm", "scroll", {"name": "scroll"}),
])
def test_anything_else_is_custom_with_its_name_kept(source: str, name: str, payload: dict[str, Any]) -> None:
    event = normalize(source, name, payload)
    assert event.type == "custom"
    assert event.original_name == name


# --- Contact fields -----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("  John.Smith@Example.COM ", "john.smith@example.com"),
    ("ann@example.org", "ann@example.org"),
    ("not an email", None),
    ("ann@", None),
    ("", None),
    ("   ", None),
    (None, None),
    (42, None),
])
def test_normalize_email(raw: Any, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+1 650-555-1212", None, "+16505551212"),
    ("+44 844 412 4653", None, "+448444124653"),
    ("(650) 555-1212", "US", "+16505551212"),
    ("(650) 555-1212", "us", "+16505551212"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 20 7946 0958", "US", "+442079460958"),  # an explicit country code beats the region
    ("(650) 555-1212", None, None),  # no country to read a national number in: never guess
    ("6505551212", None, None),
    ("+1 000", None, None),
    ("call me", "US", None),
    ("", "US", None),
    (None, "US", None),
    ("(650) 555-1212", "USA", None),  # not an alpha-2 code, so no region
])
def test_normalize_phone(raw: Any, region: str | None, expected: str | None) -> None:
    assert normalize_phone(raw, region) == expected


def test_sha256_email_follows_metas_example() -> None:
    assert sha256_email(" John_Smith@gmail.com ") == META_EMAIL_HASH


def test_sha256_phone_follows_metas_example() -> None:
    assert sha256_phone("+16505551212") == META_PHONE_HASH


def test_identity_is_empty() -> None:
    assert Identity().is_empty
    assert Identity(profile={"firstName": "Ann"}).is_empty  # a name alone cannot find a contact
    assert not Identity(email="a@example.com").is_empty
    assert not Identity(email_sha256=META_EMAIL_HASH).is_empty
    assert not Identity(phone="+16505551212").is_empty
    assert not Identity(phone_sha256=META_PHONE_HASH).is_empty
    assert not Identity(external_ids={"ga4ClientId": "1.2"}).is_empty


# --- Shopify ------------------------------------------------------------------------------------

REST_ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "name": "#1001",
    "email": " Jon@Example.com ",
    "phone": None,
    "total_price": "199.65",
    "currency": "usd",
    "created_at": "2024-03-01T10:15:00-05:00",
    "updated_at": "2024-03-02T08:00:00-05:00",
    "line_items": [
        {"product_id": 632910392, "quantity": 2},
        {"product_id": 632910392, "quantity": 1},
        {"product_id": None, "quantity": 1},  # a custom line item has no product
    ],
    "billing_address": {"first_name": "Bob", "last_name": "Norman", "country_code": "US", "phone": "(650) 555-1212"},
    "shipping_address": {"country_code": "CA", "phone": "+1 416 555 0199"},
    "customer": {
        "id": 115310627314723954,
        "email": "jon@example.com",
        "first_name": "Jon",
        "last_name": "Snow",
        "email_marketing_consent": {"state": "subscribed"},
        "sms_marketing_consent": {"state": "not_subscribed"},
    },
}


def test_shopify_rest_order() -> None:
    event = normalize("shopify", "orders/create", REST_ORDER)
    assert event.type == "order_placed"
    assert event.occurred_at == datetime(2024, 3, 1, 15, 15)
    assert event.properties == {
        "orderId": "820982911946154508",
        "orderName": "#1001",
        "value": 199.65,
        "currency": "USD",
        "productIds": ["632910392"],
        "itemCount": 4,
    }
    identity = event.identity
    assert identity.email == "jon@example.com"
    assert identity.email_sha256 == sha256_email("jon@example.com")
    # The billing address is the buyer's; its country reads the national number.
    assert identity.phone == "+16505551212"
    assert identity.phone_sha256 == META_PHONE_HASH
    assert identity.external_ids == {"shopifyCustomerId": "115310627314723954"}
    assert identity.profile == {"firstName": "Jon", "lastName": "Snow", "country": "US"}
    assert event.consent == {"email": "subscribed"}
    assert_json_safe(event)


def test_shopify_shipping_address_gives_only_the_country() -> None:
    order = {"id": 1, "shipping_address": {"country_code": "ca", "phone": "+1 416 555 0199", "first_name": "Gift"}}
    identity = normalize("shopify", "orders/create", order).identity
    assert identity.phone is None
    assert identity.profile == {"country": "CA"}
    assert identity.is_empty


GRAPHQL_ORDER: dict[str, Any] = {
    "id": "gid://shopify/Order/5551234",
    "name": "#1002",
    "email": "ann@example.com",
    "phone": "+44 20 7946 0958",
    "createdAt": "2024-03-01T10:15:00Z",
    "updatedAt": "2024-03-05T10:15:00Z",
    "totalPriceSet": {"shopMoney": {"amount": "42.50", "currencyCode": "GBP"}},
    "lineItems": {"edges": [
        {"node": {"quantity": 3, "product": {"id": "gid://shopify/Product/77"}}},
        {"node": {"quantity": 1, "product": None}},
    ]},
    "customer": {"id": "gid://shopify/Customer/999", "firstName": "Ann", "lastName": "Lee"},
    "billingAddress": {"countryCodeV2": "GB"},
}


def test_shopify_graphql_order() -> None:
    event = normalize("shopify", "orders/create", GRAPHQL_ORDER)
    assert event.type == "order_placed"
    assert event.occurred_at == datetime(2024, 3, 1, 10, 15)
    assert event.properties == {
        "orderId": "5551234", "orderName": "#1002", "value": 42.5, "currency": "GBP",
        "productIds": ["77"], "itemCount": 4,
    }
    assert event.identity.email == "ann@example.com"
    assert event.identity.phone == "+442079460958"
    assert event.identity.external_ids == {"shopifyCustomerId": "999"}
    assert event.identity.profile == {"firstName": "Ann", "lastName": "Lee", "country": "GB"}
    assert event.consent == {}
    assert_json_safe(event)


def test_shopify_graphql_line_items_as_nodes_or_list() -> None:
    for line_items in (
        {"nodes": [{"quantity": 1, "product": {"id": "gid://shopify/Product/8"}}]},
        [{"quantity": 1, "product": {"id": "gid://shopify/Product/8"}}],
    ):
        event = normalize("shopify", "orders/create", {"id": "gid://shopify/Order/1", "lineItems": line_items})
        assert event.properties["productIds"] == ["8"]
        assert event.properties["itemCount"] == 1


def test_shopify_rest_and_graphql_shapes_agree_on_a_customer() -> None:
    rest = {
        "id": 207119551, "email": "Bob.Norman@Example.com", "phone": "+16136120707",
        "first_name": "Bob", "last_name": "Norman", "tags": "vip, wholesale",
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in"},
        "sms_marketing_consent": {"state": "unsubscribed"},
        "default_address": {"country_code": "CA"},
        "created_at": "2024-01-01T00:00:00-00:00", "updated_at": "2024-02-01T12:00:00+01:00",
    }
    graphql = {
        "id": "gid://shopify/Customer/207119551", "email": "bob.norman@example.com", "phone": "+16136120707",
        "firstName": "Bob", "lastName": "Norman", "tags": ["vip", "wholesale"],
        "emailMarketingConsent": {"marketingState": "SUBSCRIBED"},
        "smsMarketingConsent": {"marketingState": "UNSUBSCRIBED"},
        "defaultAddress": {"countryCodeV2": "CA"},
        "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-02-01T11:00:00Z",
    }
    from_rest = normalize("shopify", "customers/update", rest)
    from_graphql = normalize("shopify", "customers/update", graphql)
    assert from_rest == from_graphql
    assert from_rest.type == "customer_updated"
    assert from_rest.occurred_at == datetime(2024, 2, 1, 11, 0)  # an update happened when it changed
    assert from_rest.properties == {"customerId": "207119551", "tags": ["vip", "wholesale"]}
    assert from_rest.identity.email == "bob.norman@example.com"
    assert from_rest.identity.phone == "+16136120707"
    assert from_rest.identity.external_ids == {"shopifyCustomerId": "207119551"}
    assert from_rest.identity.profile == {"firstName": "Bob", "lastName": "Norman", "country": "CA"}
    assert from_rest.consent == {"email": "subscribed", "sms": "unsubscribed"}


def test_shopify_customer_created_uses_created_at_and_default_address_country_for_phone() -> None:
    event = normalize("shopify", "customers/create", {
        "id": 5, "phone": "020 7946 0958", "default_address": {"country_code": "GB"},
        "created_at": "2024-01-01T09:00:00Z", "updated_at": "2024-01-03T09:00:00Z",
    })
    assert event.type == "customer_created"
    assert event.occurred_at == datetime(2024, 1, 1, 9, 0)
    assert event.identity.phone == "+442079460958"


def test_shopify_newer_graphql_customer_contact_fields() -> None:
    event = normalize("shopify", "customers/update", {
        "id": "gid://shopify/Customer/5",
        "defaultEmailAddress": {"emailAddress": "New@Example.com"},
        "defaultPhoneNumber": {"phoneNumber": "+16505551212"},
    })
    assert event.identity.email == "new@example.com"
    assert event.identity.phone == "+16505551212"


@pytest.mark.parametrize("state", ["not_subscribed", "pending", "invalid", "redacted", "NOT_SUBSCRIBED", None, 3])
def test_shopify_consent_only_when_explicit(state: Any) -> None:
    event = normalize("shopify", "customers/update", {
        "id": 1, "email_marketing_consent": {"state": state}, "sms_marketing_consent": None,
    })
    assert event.consent == {}


def test_shopify_consent_is_read_from_the_contact_points_first() -> None:
    event = normalize("shopify", "customers/update", {
        "id": "gid://shopify/Customer/5",
        "defaultEmailAddress": {"emailAddress": "a@example.com", "marketingState": "SUBSCRIBED"},
        "defaultPhoneNumber": {"phoneNumber": "+16505551212", "marketingState": "NOT_SUBSCRIBED"},
        # Deprecated, and contradicted by the contact points: never read while those say something.
        "emailMarketingConsent": {"marketingState": "UNSUBSCRIBED"},
        "smsMarketingConsent": {"marketingState": "SUBSCRIBED"},
    })
    assert event.consent == {"email": "subscribed"}
    rest = normalize("shopify", "customers/update", {
        "id": 5, "default_email_address": {"email_address": "a@example.com", "marketing_state": "unsubscribed"},
        "email_marketing_consent": {"state": "subscribed"},
    })
    assert rest.consent == {"email": "unsubscribed"}


@pytest.mark.parametrize("customer, consent", [
    ({"defaultEmailAddress": {"emailAddress": "a@example.com"}, "emailMarketingConsent": {"marketingState": "SUBSCRIBED"}},
     {"email": "subscribed"}),
    ({"defaultPhoneNumber": None, "smsMarketingConsent": {"marketingState": "UNSUBSCRIBED"}}, {"sms": "unsubscribed"}),
    ({"email": "a@example.com", "accepts_marketing": True}, {"email": "subscribed"}),
    ({"email": "a@example.com", "acceptsMarketing": True, "emailMarketingConsent": {"marketingState": "UNSUBSCRIBED"}},
     {"email": "unsubscribed"}),
    ({"email": "a@example.com", "accepts_marketing": False}, {}),
])
def test_shopify_deprecated_consent_fields_are_the_fallback(customer: dict[str, Any], consent: dict[str, str]) -> None:
    assert normalize("shopify", "customers/update", {"id": 1, **customer}).consent == consent


def test_shopify_consent_topics() -> None:
    email = normalize("shopify", "customers_email_marketing_consent/update", {
        "customer_id": 706405506930370084, "email_address": "Bob@Example.com",
        "email_marketing_consent": {"state": "unsubscribed", "opt_in_level": None, "consent_updated_at": None},
    })
    assert (email.type, email.original_name) == ("custom", "customers_email_marketing_consent/update")
    assert email.identity.email == "bob@example.com"
    assert email.identity.external_ids == {"shopifyCustomerId": "706405506930370084"}
    assert email.consent == {"email": "unsubscribed"}
    sms = normalize("shopify", "customers_marketing_consent/update", {
        "id": 706405506930370084, "phone": "+16135550199",
        "sms_marketing_consent": {"state": "subscribed", "opt_in_level": "single_opt_in",
                                  "consent_updated_at": "2025-03-01T10:00:00-05:00", "consent_collected_from": "OTHER"},
    })
    assert sms.identity.phone == "+16135550199" and sms.consent == {"sms": "subscribed"}
    assert sms.properties == {"customerId": "706405506930370084"}
    assert_json_safe(sms)


def test_shopify_national_phone_without_a_country_is_dropped() -> None:
    event = normalize("shopify", "customers/create", {"id": 1, "phone": "(650) 555-1212"})
    assert event.identity.phone is None
    assert event.identity.phone_sha256 is None


def test_shopify_rest_checkout() -> None:
    event = normalize("shopify", "checkouts/create", {
        "id": 450789469, "token": "2a1ace52255252df566af0faaedfbfa7",
        "email": "cart@example.com",
        "abandoned_checkout_url": "https://shop.example/checkouts/2a1a/recover",
        "total_price": "398.00", "currency": "USD",
        "line_items": [{"product_id": 632910392, "quantity": 1}],
        "customer": {"id": 207119551, "email_marketing_consent": {"state": "unsubscribed"}},
        "created_at": "2024-05-01T12:00:00+02:00",
    })
    assert event.type == "checkout_started"
    assert event.occurred_at == datetime(2024, 5, 1, 10, 0)
    assert event.properties == {
        "checkoutId": "450789469", "checkoutToken": "2a1ace52255252df566af0faaedfbfa7",
        "checkoutUrl": "https://shop.example/checkouts/2a1a/recover",
        "value": 398.0, "currency": "USD", "productIds": ["632910392"], "itemCount": 1,
    }
    assert event.identity.email == "cart@example.com"
    assert event.identity.external_ids == {"shopifyCustomerId": "207119551"}
    assert event.consent == {"email": "unsubscribed"}


def test_shopify_graphql_abandoned_checkout() -> None:
    event = normalize("shopify", "checkouts/create", {
        "id": "gid://shopify/AbandonedCheckout/321",
        "abandonedCheckoutUrl": "https://shop.example/recover/321",
        "totalPriceSet": {"shopMoney": {"amount": "10", "currencyCode": "EUR"}},
        "customer": {"id": "gid://shopify/Customer/12", "email": "late@example.com"},
        "createdAt": "2024-05-01T12:00:00Z",
    })
    assert event.type == "checkout_started"
    assert event.properties == {
        "checkoutId": "321", "checkoutUrl": "https://shop.example/recover/321", "value": 10.0, "currency": "EUR",
    }
    assert event.identity.email == "late@example.com"
    assert event.identity.external_ids == {"shopifyCustomerId": "12"}


def test_shopify_other_order_topics_are_custom_but_still_read() -> None:
    event = normalize("shopify", "orders/paid", REST_ORDER)
    assert event.type == "custom"
    assert event.original_name == "orders/paid"
    assert event.properties["orderId"] == "820982911946154508"
    assert event.identity.email == "jon@example.com"


def test_shopify_unknown_resource_has_no_identity() -> None:
    # A product's id is not a customer's: nothing from it may tie the event to a contact.
    product = {"id": 632910392, "title": "IPod", "created_at": "2024-01-01T00:00:00Z"}
    event = normalize("shopify", "products/create", product)
    assert event.type == "custom"
    assert event.identity.is_empty
    assert event.properties == {}
    assert event.occurred_at == datetime(2024, 1, 1)


@pytest.mark.parametrize(("value", "expected"), [
    (123, "123"),
    ("123", "123"),
    (" 123 ", "123"),
    ("gid://shopify/Customer/123", "123"),
    ("gid://shopify/Order/450789469?session=abc", "450789469"),
    (None, None),
    ("", None),
])
def test_shopify_id(value: Any, expected: str | None) -> None:
    assert shopify_id(value, "id") == expected


@pytest.mark.parametrize("value", [
    "abc", "gid://shopify/Customer/", "gid://shopify/Customer/x1", -5, True, 1.5, {"id": 1},
])
def test_shopify_id_rejects_what_is_not_an_id(value: Any) -> None:
    with pytest.raises(PoisonEvent):
        shopify_id(value, "id")


# --- Meta ---------------------------------------------------------------------------------------

def meta_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": 1700000000,
        "event_id": "evt-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [META_EMAIL_HASH],
            "ph": [META_PHONE_HASH],
            "external_id": ["ext-42"],
            "fn": [sha("john")],
            "country": [sha("us")],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
            "fbp": "fb.1.1596403881668.1116446470",
        },
        "custom_data": {
            "value": 123.45, "currency": "usd", "order_id": "ORD-9", "content_ids": ["sku-1", "sku-2"],
            "content_type": "product", "num_items": 2,
            "contents": [{"id": "sku-1", "quantity": 1}, {"id": "sku-2", "quantity": 1}],
        },
        **overrides,
    }


def test_meta_purchase_with_hashed_identity_as_lists() -> None:
    event = normalize("facebook_pixel", "Purchase", meta_event())
    assert event.type == "order_placed"
    assert event.original_name == "Purchase"
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20)
    identity = event.identity
    assert identity.email is None
    assert identity.email_sha256 == META_EMAIL_HASH
    assert identity.phone is None
    assert identity.phone_sha256 == META_PHONE_HASH
    assert identity.external_ids == {"metaExternalId": "ext-42"}
    assert identity.profile == {"country": "US"}  # a hashed name cannot be recovered; a country can
    assert not identity.is_empty
    props = event.properties
    assert props["value"] == 123.45
    assert props["currency"] == "USD"
    assert props["orderId"] == "ORD-9"
    assert props["productIds"] == ["sku-1", "sku-2"]
    assert props["itemCount"] == 2
    assert props["url"] == "https://shop.example/thanks"
    assert props["content_type"] == "product"  # custom_data scalars are kept for audience filters
    assert "contents" not in props  # nested objects are not
    assert event.consent == {}
    assert_json_safe(event)


def test_meta_hashed_identity_as_strings_and_upper_case_hex() -> None:
    event = normalize("facebook_pixel", "Lead", {
        "event_name": "Lead",
        "user_data": {"em": META_EMAIL_HASH.upper(), "ph": META_PHONE_HASH, "external_id": "ext-7"},
    })
    assert event.type == "lead"
    assert event.identity.email_sha256 == META_EMAIL_HASH
    assert event.identity.phone_sha256 == META_PHONE_HASH
    assert event.identity.external_ids == {"metaExternalId": "ext-7"}
    assert event.occurred_at is None


def test_meta_plain_values_are_read_and_hashed_by_metas_rule() -> None:
    event = normalize("facebook_pixel", "AddToCart", {
        "event_name": "AddToCart",
        "user_data": {
            "em": " John_Smith@gmail.com ", "ph": "16505551212", "fn": "john", "ln": ["smith"], "country": "us",
        },
    })
    identity = event.identity
    assert identity.email == "john_smith@gmail.com"
    assert identity.email_sha256 == META_EMAIL_HASH
    assert identity.phone == "+16505551212"
    assert identity.phone_sha256 == META_PHONE_HASH
    assert identity.profile == {"firstName": "john", "lastName": "smith", "country": "US"}


def test_meta_first_usable_value_wins() -> None:
    event = normalize("facebook_pixel", "PageView", {
        "event_name": "PageView",
        "user_data": {"em": ["", "not-a-hash-or-email", META_EMAIL_HASH], "external_id": [None, "", "second"]},
    })
    assert event.identity.email_sha256 == META_EMAIL_HASH
    assert event.identity.external_ids == {"metaExternalId": "second"}


def test_meta_reads_a_customers_identity_once_and_never_confuses_equal_values_of_other_kinds() -> None:
    """Identities are memoized on the user_data fields they come from (text, as Meta sends them); a
    number and a boolean are equal in Python (1 == True) but not as identifiers."""
    def identity(external_id: object) -> Identity:
        return normalize("facebook_pixel", "PageView", {
            "event_name": "PageView", "user_data": {"em": [META_EMAIL_HASH], "external_id": external_id}}).identity

    assert identity(["ext-1"]) is identity(["ext-1"])
    assert identity(["ext-1"]) == identity("ext-1")
    assert identity(1).external_ids == {"metaExternalId": "1"}
    assert identity(True).external_ids == {}
    assert identity(1.0).external_ids == {}
    assert identity([1]).external_ids == {"metaExternalId": "1"}


def test_meta_product_ids_from_contents_and_item_count_from_quantities() -> None:
    event = normalize("facebook_pixel", "ViewContent", {
        "event_name": "ViewContent",
        "event_time": "1700000000",
        "custom_data": {"contents": [{"id": "a", "quantity": 2}, {"id": 7, "quantity": 1}]},
    })
    assert event.type == "product_viewed"
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20)
    assert event.properties == {"productIds": ["a", "7"], "itemCount": 3}
    assert event.identity.is_empty


def test_meta_unknown_event_keeps_its_name_and_custom_data() -> None:
    event = normalize("facebook_pixel", "Subscribe", {
        "event_name": "Subscribe", "custom_data": {"predicted_ltv": 30, "plan": "gold"},
    })
    assert event.type == "custom"
    assert event.original_name == "Subscribe"
    assert event.properties == {"predicted_ltv": 30, "plan": "gold"}


def test_meta_payload_name_is_authoritative() -> None:
    assert normalize("facebook_pixel", "Purchase", {"event_name": "Lead"}).type == "lead"


# --- GA4 ----------------------------------------------------------------------------------------

def ga4_event(**overrides: Any) -> dict[str, Any]:
    return {
        "client_id": "1234567890.1700000000",
        "user_id": "user-42",
        "timestamp_micros": 1700000000123456,
        "user_properties": {"plan": {"value": "pro"}},
        "name": "purchase",
        "params": {
            "transaction_id": "T-100", "value": "59.90", "currency": "eur", "coupon": "SPRING",
            "page_location": "https://shop.example/checkout/done",
            "items": [{"item_id": "SKU_1", "quantity": 2}, {"item_id": "SKU_2"}],
            "engagement_time_msec": 100,
        },
        **overrides,
    }


def test_ga4_purchase_with_user_and_client_id() -> None:
    event = normalize("gtm", "purchase", ga4_event())
    assert event.type == "order_placed"
    assert event.original_name == "purchase"
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert event.identity.external_ids == {"ga4UserId": "user-42", "ga4ClientId": "1234567890.1700000000"}
    assert event.identity.email is None
    assert event.properties == {
        "transaction_id": "T-100", "value": 59.9, "currency": "EUR", "coupon": "SPRING",
        "page_location": "https://shop.example/checkout/done", "engagement_time_msec": 100,
        "plan": "pro",  # a user property, beside the params
        "orderId": "T-100", "productIds": ["SKU_1", "SKU_2"],
        "itemCount": 3,  # SKU_2 has no quantity: GA4 counts it as one
        "url": "https://shop.example/checkout/done",
    }
    assert_json_safe(event)


def test_ga4_client_id_only_and_numeric_ids() -> None:
    event = normalize("gtm", "page_view", {
        "client_id": 555, "name": "page_view", "timestamp_micros": "1700000000000000",
        "params": {"page_location": "https://shop.example/", "page_title": "Home"},
    })
    assert event.type == "page_viewed"
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20)
    assert event.identity.external_ids == {"ga4ClientId": "555"}
    assert event.properties == {"page_location": "https://shop.example/", "page_title": "Home", "url": "https://shop.example/"}


def test_ga4_contact_details_from_params_user_data_and_user_properties() -> None:
    from_params = normalize("gtm", "generate_lead", {
        "name": "generate_lead",
        "params": {"email": "Lead@Example.com", "phone": "+1 650 555 1212", "form": "newsletter"},
    })
    assert from_params.type == "lead"
    assert from_params.identity.email == "lead@example.com"
    assert from_params.identity.phone == "+16505551212"
    assert from_params.properties == {"form": "newsletter"}  # personal data is not copied

    from_user_data = normalize("gtm", "sign_up", {
        "name": "sign_up",
        "user_data": {
            "email_address": ["", "UD@example.com"], "phone_number": "(650) 555-1212",
            "address": [{"first_name": "Ann", "last_name": "Lee", "country": "us"}],
        },
    })
    assert from_user_data.identity.email == "ud@example.com"
    assert from_user_data.identity.phone == "+16505551212"  # read in the address's country
    assert from_user_data.identity.profile == {"firstName": "Ann", "lastName": "Lee", "country": "US"}

    in_params = normalize("gtm", "sign_up", {
        "name": "sign_up", "params": {"user_data": {"email_address": "p@example.com"}, "method": "google"},
    })
    assert in_params.identity.email == "p@example.com"
    assert in_params.properties == {"method": "google"}

    from_user_properties = normalize("gtm", "login", {
        "name": "login",
        "user_properties": {"email": {"value": "UP@example.com"}, "country": "gb", "first_name": {"value": "Bo"}},
    })
    assert from_user_properties.identity.email == "up@example.com"
    assert from_user_properties.identity.profile == {"firstName": "Bo", "country": "GB"}


def test_ga4_google_hashed_user_data_is_not_taken_for_meta_hashes() -> None:
    event = normalize("gtm", "purchase", {
        "name": "purchase",
        "user_data": {"sha256_email_address": [META_EMAIL_HASH], "sha256_phone_number": [META_PHONE_HASH]},
    })
    assert event.identity.email_sha256 is None
    assert event.identity.phone_sha256 is None
    assert event.identity.is_empty


def test_ga4_add_to_cart_view_item_begin_checkout_properties() -> None:
    params = {"currency": "USD", "value": 10, "items": [{"item_id": "A", "quantity": 1}]}
    expected_types = {
        "view_item": "product_viewed", "add_to_cart": "added_to_cart", "begin_checkout": "checkout_started",
    }
    for name, expected in expected_types.items():
        event = normalize("gtm", name, {"name": name, "client_id": "c", "params": params})
        assert event.type == expected
        assert event.properties == {"currency": "USD", "value": 10.0, "productIds": ["A"], "itemCount": 1}


def test_ga4_unknown_event_is_custom_with_params() -> None:
    payload = {"name": "video_complete", "params": {"video_title": "Intro", "nested": {"x": 1}}}
    event = normalize("gtm", "video_complete", payload)
    assert event.type == "custom"
    assert event.original_name == "video_complete"
    assert event.properties == {"video_title": "Intro"}


def test_ga4_app_stream_device_id_and_ad_personalization_flag() -> None:
    event = normalize("gtm", "add_to_cart", {
        "app_instance_id": "cbd7a2c6b3a94e52b0a8fe8a5c1c2d41", "firebase_app_id": "1:1234:android:abcd",
        "non_personalized_ads": True, "name": "add_to_cart", "params": {"items": [{"item_id": "A"}]},
    })
    assert event.identity.external_ids == {"ga4ClientId": "cbd7a2c6b3a94e52b0a8fe8a5c1c2d41"}
    assert event.properties == {"non_personalized_ads": True, "productIds": ["A"], "itemCount": 1}


def test_ga4_user_properties_beside_params_without_personal_data() -> None:
    event = normalize("gtm", "login", {
        "name": "login", "params": {"method": "google", "tier": "from-params"},
        "user_properties": {"tier": {"value": "gold"}, "visits": {"value": 7}, "email": {"value": "a@example.com"},
                            "first_name": "Al", "nested": {"value": {"x": 1}}},
    })
    assert event.properties == {"tier": "from-params", "visits": 7, "method": "google"}
    assert event.identity.email == "a@example.com" and event.identity.profile == {"firstName": "Al"}


def test_ga4_item_quantities() -> None:
    items = [{"item_id": "A"}, {"item_id": "B", "quantity": 3}, {"item_id": "C", "quantity": 0},
             {"item_id": "D", "quantity": "2"}, {"item_id": "E", "quantity": "many"}]
    event = normalize("gtm", "purchase", {"name": "purchase", "params": {"items": items}})
    assert event.properties["itemCount"] == 6


def test_server_side_gtm_event_data() -> None:
    """The event data a server container's GA4 client builds (common event data, the event's parameters
    beside it, `x-ga-*` keys), as a tag forwards it."""
    event = normalize("gtm", "purchase", {
        "x-ga-protocol_version": "2", "x-ga-measurement_id": "G-FBVKWPGDPE", "x-ga-page_id": 1940542384,
        "x-ga-system_properties": {"z": "ccd.tbB"}, "x-ga-mp2-user_properties": {"_npa": "1", "tier": "gold"},
        "x-ga-js_client_id": "2024456455.1647778941",
        "client_id": "ZDoa3Sn32zo3RN66kguVogdtbQB1xZr/EBDR9gylXKA=.1647778941", "user_id": "u-7",
        "event_name": "purchase", "language": "en", "page_location": "https://shop.example/done",
        "page_title": "Thanks", "ip_override": "80.221.59.110", "user_agent": "Mozilla/5.0",
        "transaction_id": "T-9", "value": 42.5, "currency": "eur", "items": [{"item_id": "SKU_1"}],
        "user_data": {"email_address": "Ada@Example.com", "phone_number": "+44 20 7946 0958",
                      "address": {"first_name": "Ada", "last_name": "Lovelace", "country": "GB"}},
    })
    assert event.type == "order_placed" and event.original_name == "purchase"
    assert event.occurred_at is None  # server-side GTM event data carries no time: it happened on arrival
    assert (event.identity.email, event.identity.phone) == ("ada@example.com", "+442079460958")
    assert event.identity.external_ids == {
        "ga4UserId": "u-7", "ga4ClientId": "ZDoa3Sn32zo3RN66kguVogdtbQB1xZr/EBDR9gylXKA=.1647778941"}
    assert event.identity.profile == {"firstName": "Ada", "lastName": "Lovelace", "country": "GB"}
    assert event.zone is not None and event.zone.zone == "Europe/London"
    assert event.properties == {
        "_npa": "1", "tier": "gold", "language": "en", "page_location": "https://shop.example/done",
        "page_title": "Thanks", "transaction_id": "T-9", "value": 42.5, "currency": "EUR", "orderId": "T-9",
        "productIds": ["SKU_1"], "itemCount": 1, "url": "https://shop.example/done",
    }
    assert_json_safe(event)


def test_server_side_gtm_event_data_falls_back_to_the_js_client_id() -> None:
    event = normalize("gtm", "page_view", {"event_name": "page_view", "x-ga-js_client_id": "11.22",
                                           "timestamp_micros": 1700000000000000})
    assert event.identity.external_ids == {"ga4ClientId": "11.22"}
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20)


# --- Poison -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "name", "payload", "message"), [
    ("shopify", "orders/create", ["not", "a", "dict"], "eventData must be a JSON object"),
    ("shopify", "orders/create", None, "eventData must be a JSON object"),
    ("facebook_pixel", "Purchase", "Purchase", "eventData must be a JSON object"),
    ("nowhere", "x", {}, "unknown source type"),
    ("shopify", "", {"id": 1}, "topic"),
    ("shopify", "orders", {"id": 1}, "topic"),
    ("shopify", "orders/create", {"id": 1, "total_price": "abc"}, "total_price is not a number"),
    ("shopify", "orders/create", {"id": 1, "total_price": "nan"}, "finite"),
    ("shopify", "orders/create", {"id": 1, "total_price": True}, "total_price"),
    ("shopify", "orders/create", {"id": 1, "totalPriceSet": {"shopMoney": {"amount": "ten"}}}, "amount"),
    ("shopify", "orders/create", {"id": "gid://shopify/Order/abc"}, "not a Shopify id"),
    ("shopify", "orders/create", {"id": 1, "customer": "bob"}, "customer must be an object"),
    ("shopify", "orders/create", {"id": 1, "customer": {"id": "bob"}}, "customer.id"),
    ("shopify", "orders/create", {"id": 1, "line_items": "many"}, "line_items"),
    ("shopify", "orders/create", {"id": 1, "line_items": ["one"]}, "line_items"),
    ("shopify", "orders/create", {"id": 1, "created_at": "yesterday"}, "created_at"),
    ("shopify", "customers/update", {"id": 1, "updated_at": 1700000000}, "updated_at"),
    ("facebook_pixel", "Purchase", {}, "event_name"),
    ("facebook_pixel", "Purchase", {"event_name": ""}, "event_name"),
    ("facebook_pixel", "Purchase", {"event_name": 5}, "event_name"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "user_data": "em"}, "user_data"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "custom_data": [1]}, "custom_data"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "custom_data": {"value": "lots"}}, "custom_data.value"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "custom_data": {"contents": {"id": 1}}}, "contents"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "event_time": "soon"}, "event_time"),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "event_time": 10**15}, "event_time"),
    ("gtm", "purchase", {"params": {}}, "name"),
    ("gtm", "purchase", {"name": "purchase", "params": "value=1"}, "params"),
    ("gtm", "purchase", {"name": "purchase", "params": {"value": "1,5"}}, "params.value"),
    ("gtm", "purchase", {"name": "purchase", "params": {"items": "SKU_1"}}, "items"),
    ("gtm", "purchase", {"name": "purchase", "timestamp_micros": "later"}, "timestamp_micros"),
    ("gtm", "purchase", {"name": "purchase", "user_properties": ["plan"]}, "user_properties"),
    ("gtm", "purchase", {"event_name": ""}, "name"),
    ("gtm", "purchase", {"event_name": "purchase", "user_data": "ada@example.com"}, "user_data"),
    ("gtm", "purchase", {"event_name": "purchase", "x-ga-mp2-user_properties": "tier"}, "user_properties"),
])
def test_poison_payloads(source: str, name: str, payload: Any, message: str) -> None:
    with pytest.raises(PoisonEvent, match=message) as caught:
        normalize(source, name, payload)
    assert isinstance(caught.value, ValueError)


def test_poison_message_names_source_and_event() -> None:
    with pytest.raises(PoisonEvent) as caught:
        normalize("shopify", "orders/create", {"id": 1, "total_price": "abc"})
    assert str(caught.value) == "shopify 'orders/create': total_price is not a number: 'abc'"


@pytest.mark.parametrize(("source", "name", "payload"), [
    ("shopify", "orders/create", {"id": 1, "total_price": ""}),
    ("shopify", "orders/create", {"id": 1, "total_price": None}),
    ("facebook_pixel", "Purchase", {"event_name": "Purchase", "custom_data": {"value": None}, "event_time": None}),
    ("gtm", "purchase", {"name": "purchase", "params": {"value": ""}}),
])
def test_missing_values_are_not_poison(source: str, name: str, payload: dict[str, Any]) -> None:
    event = normalize(source, name, payload)
    assert "value" not in event.properties
    assert event.occurred_at is None
