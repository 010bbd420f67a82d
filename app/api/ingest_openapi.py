"""OpenAPI documents of the ingest routes' requests: bodies as each provider's clients send them, with
examples, the ways the ingest key may come, and the answers."""
from __future__ import annotations

import json
from typing import Any

from app.schemas.ingest import MAX_BATCH

INGEST_KEY_HEADER = "X-Ingest-Key"
_EXAMPLE_TIME = 1767225600  # 2026-01-01; a real CAPI event must be from the last 7 days

# --- Meta Conversions API -----------------------------------------------------------------------

CAPI_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event_name", "event_time"],
    "additionalProperties": True,
    "description": "One server event, as Meta's Conversions API defines it; every field is kept as sent.",
    "properties": {
        "event_name": {"type": "string", "minLength": 1, "maxLength": 100,
                       "description": "PageView, ViewContent, AddToCart, InitiateCheckout, Purchase and Lead map "
                                      "to Herald's types; any other name is a `custom` event."},
        "event_time": {"type": "integer", "description": "Unix time in seconds, within the last 7 days."},
        "event_id": {"type": "string", "minLength": 1, "maxLength": 200,
                     "description": "With `event_name`, what a duplicate is (as Meta de-duplicates)."},
        "event_source_url": {"type": "string"},
        "action_source": {"type": "string"},
        "user_data": {
            "type": "object", "additionalProperties": True,
            "description": "`em`, `ph`: SHA-256 hex of the normalized value (Meta's rule) or the plain value, one "
                           "or a list; `fn`, `ln`, `country`, `st` plain or hashed; `external_id`, "
                           "`client_ip_address`, `client_user_agent`, `fbc`, `fbp` kept as sent.",
        },
        "custom_data": {
            "type": "object", "additionalProperties": True,
            "description": "`value`, `currency`, `order_id`, `content_ids`, `contents` (`[{id, quantity}]`), "
                           "`num_items`, and custom properties.",
        },
    },
}
_ENCODED_EVENT = {"type": "string", "contentMediaType": "application/json",
                  "description": "An event, JSON-encoded (the facebook-business SDK sends each event so)."}
_BATCH_FIELDS: dict[str, Any] = {
    "access_token": {"type": "string", "description": f"The source's ingest key, if not in `{INGEST_KEY_HEADER}`."},
    "test_event_code": {"type": "string", "description": "Accepted and ignored: the events are stored as any other."},
    "partner_agent": {"type": "string", "description": "Accepted and ignored."},
}
CAPI_JSON: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": True,
    "properties": {
        "data": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {"anyOf": [CAPI_EVENT, _ENCODED_EVENT]}},
        **_BATCH_FIELDS,
    },
}
CAPI_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": f"A JSON array of 1 to {MAX_BATCH} events: objects, or JSON-encoded events."},
        **_BATCH_FIELDS,
    },
}
_PURCHASE = {
    "event_name": "Purchase", "event_time": _EXAMPLE_TIME, "event_id": "order-1001", "action_source": "website",
    "event_source_url": "https://shop.example/checkout/done",
    "user_data": {"em": ["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"],
                  "ph": ["254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4"],
                  "client_ip_address": "203.0.113.7", "fbp": "fb.1.1558571054389.1098115397"},
    "custom_data": {"currency": "usd", "value": 123.45, "order_id": "1001",
                    "contents": [{"id": "product123", "quantity": 1}]},
}
_SDK_EVENT = {"event_name": "Purchase", "event_time": _EXAMPLE_TIME, "event_id": "order-1001",
              "user_data": {"em": ["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"]},
              "custom_data": {"value": 123.45, "currency": "usd"}, "action_source": "website"}
_LEAD = {"event_name": "Lead", "event_time": _EXAMPLE_TIME, "user_data": {"em": ["ada@example.com"]}}
_FORM_EXAMPLES = {
    "sdk": {"summary": "facebook-business SDK (EventRequest.execute): each event JSON-encoded",
            "value": {"data": json.dumps([json.dumps(_SDK_EVENT)]), "test_event_code": "TEST123",
                      "partner_agent": "my-gateway"}},
    "curl": {"summary": "Meta's curl example (-F data=... -F access_token=...)",
             "value": {"data": json.dumps([_LEAD]), "access_token": "<ingest key>"}},
}
CAPI_BODY: dict[str, Any] = {
    "required": True,
    "description": f"Up to {MAX_BATCH} events, in any of the shapes Meta's clients send.",
    "content": {
        "application/json": {"schema": CAPI_JSON, "examples": {
            "plain": {"summary": "Meta's JSON example", "value": {"data": [_PURCHASE]}},
            "encoded": {"summary": "Events as JSON-encoded strings", "value": {"data": [json.dumps(_LEAD)]}},
        }},
        "application/x-www-form-urlencoded": {"schema": CAPI_FORM, "examples": _FORM_EXAMPLES},
        "multipart/form-data": {"schema": CAPI_FORM, "examples": _FORM_EXAMPLES},
    },
}
CAPI_ACCESS_TOKEN = {"in": "query", "name": "access_token", "required": False, "schema": {"type": "string"},
                     "description": f"The source's ingest key, as Graph API clients send it (or `{INGEST_KEY_HEADER}`)."}

# --- GA4 Measurement Protocol and server-side GTM -------------------------------------------------

_OBJECT = {"type": "object", "additionalProperties": True}
_TIMESTAMP_MICROS = {"type": ["integer", "number", "string"], "description": "Unix time in microseconds."}
MP_BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": True,
    "description": "A GA4 Measurement-Protocol request body; `client_id` (web streams) or `app_instance_id` "
                   "(app streams) is required. Fields not listed are kept as sent.",
    "properties": {
        "client_id": {"type": "string", "maxLength": 200},
        "app_instance_id": {"type": "string", "maxLength": 200},
        "user_id": {"type": ["string", "null"], "maxLength": 256},
        "timestamp_micros": {**_TIMESTAMP_MICROS, "description": "The request's time, for events without their own."},
        "user_properties": {**_OBJECT, "description": '`{"name": {"value": ...}}`; email, phone_number, '
                                                      "first_name, last_name, country are read as contact details."},
        "user_data": {**_OBJECT, "description": "`email_address`, `phone_number`, `address` (plain values)."},
        "non_personalized_ads": {"type": ["boolean", "null"]},
        "consent": _OBJECT, "user_location": _OBJECT, "device": _OBJECT,
        "events": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {
            "type": "object", "required": ["name"], "additionalProperties": True,
            "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]{0,39}$"},
                           "params": {**_OBJECT, "description": "`items` without `quantity` count one unit each."},
                           "timestamp_micros": _TIMESTAMP_MICROS},
        }},
    },
}
EVENT_DATA: dict[str, Any] = {
    "type": "object",
    "required": ["event_name"],
    "additionalProperties": True,
    "description": "The event data of a server-side GTM container (its common event data, the event's "
                   "parameters beside it, and the GA4 client's `x-ga-*` keys), kept as sent.",
    "properties": {
        "event_name": {"type": "string", "minLength": 1, "maxLength": 100},
        "client_id": {"type": "string"}, "user_id": {"type": "string"},
        "ip_override": {"type": "string"}, "user_agent": {"type": "string"}, "page_location": {"type": "string"},
        "user_data": {**_OBJECT, "description": "`email_address`, `phone_number`, `address.first_name`, ..."},
        "x-ga-mp2-user_properties": _OBJECT,
        "timestamp_micros": _TIMESTAMP_MICROS,
    },
}
_WEB_BATCH = {
    "client_id": "1234567890.1767225600", "user_id": "customer-42", "timestamp_micros": _EXAMPLE_TIME * 1_000_000,
    "user_properties": {"tier": {"value": "gold"}}, "non_personalized_ads": False,
    "events": [{"name": "purchase", "timestamp_micros": _EXAMPLE_TIME * 1_000_000 + 1500, "params": {
        "transaction_id": "T-1001", "value": 59.9, "currency": "EUR",
        "items": [{"item_id": "SKU_1", "quantity": 2}, {"item_id": "SKU_2"}]}}],
}
_APP_BATCH = {"app_instance_id": "cbd7a2c6b3a94e52b0a8fe8a5c1c2d41", "user_id": "customer-42",
              "events": [{"name": "add_to_cart", "params": {"currency": "EUR", "value": 12,
                                                            "items": [{"item_id": "SKU_1"}]}}]}
_EVENT_DATA = {
    "event_name": "purchase", "client_id": "1234567890.1767225600", "ip_override": "203.0.113.7",
    "user_agent": "Mozilla/5.0", "page_location": "https://shop.example/checkout/done", "language": "en-us",
    "transaction_id": "T-1001", "value": 59.9, "currency": "EUR", "items": [{"item_id": "SKU_1", "quantity": 1}],
    "user_data": {"email_address": "ada@example.com", "address": {"first_name": "Ada", "country": "GB"}},
    "x-ga-measurement_id": "G-ABC123", "x-ga-protocol_version": "2", "x-ga-mp2-user_properties": {"tier": "gold"},
}
GA4_BODY: dict[str, Any] = {
    "required": True,
    "description": "A Measurement-Protocol batch, or server-side GTM event data (one object or a list).",
    "content": {"application/json": {
        "schema": {"anyOf": [MP_BATCH, EVENT_DATA, {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                                    "items": EVENT_DATA}]},
        "examples": {
            "web": {"summary": "Measurement Protocol, web stream", "value": _WEB_BATCH},
            "app": {"summary": "Measurement Protocol, app stream (firebase_app_id in the query)", "value": _APP_BATCH},
            "sgtm": {"summary": "Server-side GTM event data", "value": _EVENT_DATA},
        },
    }},
}
GA4_QUERY = [
    {"in": "query", "name": "api_secret", "required": False, "schema": {"type": "string"},
     "description": f"The source's ingest key, as Measurement-Protocol clients send it (or `{INGEST_KEY_HEADER}`)."},
    {"in": "query", "name": "measurement_id", "required": False, "schema": {"type": "string", "maxLength": 100},
     "description": "A web stream's id; kept with the events."},
    {"in": "query", "name": "firebase_app_id", "required": False, "schema": {"type": "string", "maxLength": 200},
     "description": "An app stream's Firebase app id; kept with the events."},
]

# --- Shared -------------------------------------------------------------------------------------

SHOPIFY_BODY: dict[str, Any] = {
    "required": True,
    "description": "The webhook's JSON as Shopify sends it for its topic (`X-Shopify-Topic`), signed with "
                   "`X-Shopify-Hmac-Sha256` over these exact bytes; stored as sent.",
    "content": {"application/json": {"schema": _OBJECT, "example": {
        "id": 820982911946154508, "email": "jon@example.com", "total_price": "199.00", "currency": "USD",
        "customer": {"id": 115310627314723954, "email": "jon@example.com", "first_name": "Jon"}}}},
}
INGEST_KEY = {"in": "header", "name": INGEST_KEY_HEADER, "required": False, "schema": {"type": "string"},
              "description": "The source's ingest key (shown when the source is created or its key rotated)."}
ERRORS = {
    400: "A body that cannot be read at all (a broken multipart form).",
    401: "No ingest key or signature, or a wrong one (for an unknown source too).",
    403: "The source is inactive.",
    413: "The body is over 5 MiB.",
    422: "Not JSON, no events, or an event Herald cannot use: `errors` names the fields.",
    429: "Too many failed authentications from this address.",
    503: "The database is unreachable: retry.",
}
GRAPH_VERSION_NOT_FOUND = "Not a Graph API version (v21.0, ...) in the path."
