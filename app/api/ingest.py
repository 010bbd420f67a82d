"""Public ingest routes, each authenticated the way its provider's world does it."""
from __future__ import annotations

import uuid

from flask import Response, request

from app.api.blueprint import HeraldBlueprint
from app.errors import ValidationFailed
from app.schemas import json_input
from app.schemas.ingest import AcceptedSchema, CapiBatchSchema, Ga4BatchSchema
from app.services import ingestion, throttles

MAX_INGEST_BODY = 5 * 1024 * 1024

blp = HeraldBlueprint("ingest", __name__, url_prefix="/ingest", description="Event ingestion (public, provider-authenticated)")


@blp.before_request
def allow_larger_bodies() -> None:
    request.max_content_length = MAX_INGEST_BODY


@blp.before_request
def refuse_clients_that_keep_failing() -> None:
    # Before any key or signature is checked: past the limit, guessing on learns nothing.
    throttles.admit_ingest(request.remote_addr)


@blp.after_request
def count_failed_authentication(response: Response) -> Response:
    if response.status_code == 401:
        throttles.ingest_failed(request.remote_addr)
    return response


def _json_object(raw: bytes) -> dict:
    # Text PostgreSQL cannot store does not fail the batch: the event holding it is quarantined.
    try:
        payload = json_input.parse(raw, lenient_text=True)
    except json_input.JsonRejected as exc:
        raise ValidationFailed(f"The body is not valid JSON: {exc.message}") from None
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return payload


@blp.route("/shopify/<uuid:source_id>", methods=["POST"])
@blp.response(202, AcceptedSchema)
@blp.alt_response(200, schema=AcceptedSchema, description="A duplicate: this event was stored before, nothing "
                  "was stored again.")
def shopify_webhook(source_id: uuid.UUID):
    """A Shopify webhook (`X-Shopify-Hmac-Sha256`, `X-Shopify-Topic`, `X-Shopify-Event-Id`, `X-Shopify-Webhook-Id`).

    The same `X-Shopify-Event-Id` (one event delivered to several subscriptions) or the same
    `X-Shopify-Webhook-Id` (a retry of one delivery) is stored once; a duplicate answers 200.
    """
    raw = request.get_data(cache=False)
    ingestion.verify_shopify_webhook(source_id, raw, request.headers.get("X-Shopify-Hmac-Sha256"))
    topic = request.headers.get("X-Shopify-Topic", "").strip()
    if not topic or len(topic) > 100:
        raise ValidationFailed("Missing X-Shopify-Topic header.", errors={"X-Shopify-Topic": ["Required."]})
    events = ingestion.shopify_events(topic, request.headers.get("X-Shopify-Event-Id"),
                                      request.headers.get("X-Shopify-Webhook-Id"), _json_object(raw), raw)
    result = ingestion.store_events(source_id, events)
    return (result, 200) if result.duplicates == result.accepted else result


@blp.route("/facebook-pixel/<uuid:source_id>", methods=["POST"])
@blp.response(202, AcceptedSchema)
def facebook_pixel(source_id: uuid.UUID):
    """A Conversions-API batch `{"data": [...]}` (up to 1,000 events), with `X-Ingest-Key`."""
    ingestion.verify_ingest_key(source_id, "facebook_pixel", request.headers.get("X-Ingest-Key"))
    batch = CapiBatchSchema().load(_json_object(request.get_data(cache=False)))
    return ingestion.store_events(source_id, ingestion.capi_events(batch))


@blp.route("/gtm/<uuid:source_id>", methods=["POST"])
@blp.response(202, AcceptedSchema)
def gtm(source_id: uuid.UUID):
    """A GA4 Measurement-Protocol batch `{"client_id", "user_id", "events": [...]}`, with `X-Ingest-Key`."""
    ingestion.verify_ingest_key(source_id, "gtm", request.headers.get("X-Ingest-Key"))
    batch = Ga4BatchSchema().load(_json_object(request.get_data(cache=False)))
    return ingestion.store_events(source_id, ingestion.ga4_events(batch))
