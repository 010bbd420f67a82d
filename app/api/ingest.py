"""Public ingest routes, each authenticated the way its provider's world does it."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, request

from app.api import ingest_openapi as doc
from app.api.blueprint import HeraldBlueprint
from app.errors import NotFound, ValidationFailed
from app.schemas import json_input
from app.schemas.ingest import (
    FORM_TYPES,
    AcceptedSchema,
    CapiAcceptedSchema,
    CapiBatchSchema,
    GraphErrorSchema,
    IngestErrorSchema,
    load_gtm_request,
    parse_json,
    read_capi_json,
)
from app.services import ingestion, throttles

MAX_INGEST_BODY = 5 * 1024 * 1024
GRAPH_VERSION = re.compile(r"v\d+\.\d+")
CAPI_ENDPOINTS = frozenset({"ingest.facebook_pixel", "ingest.facebook_pixel_graph"})
# Graph API's error codes for Herald's statuses (190: bad token, 200: permission, 4: rate limit,
# 2: passing fault; 100: invalid parameter for the rest).
_GRAPH_ERROR_CODES = {401: 190, 403: 200, 429: 4, 503: 2}

blp = HeraldBlueprint("ingest", __name__, url_prefix="/ingest", description="Event ingestion (public, provider-authenticated)")


@blp.before_request
def allow_larger_bodies() -> None:
    request.max_content_length = MAX_INGEST_BODY
    request.max_form_memory_size = MAX_INGEST_BODY  # a CAPI form's `data` field is the whole batch


@blp.before_request
def refuse_clients_that_keep_failing() -> None:
    # Before any key or signature is checked: past the limit, guessing on learns nothing.
    throttles.admit_ingest(request.remote_addr)


@blp.after_request
def count_failed_authentication(response: Response) -> Response:
    if response.status_code == 401:
        throttles.ingest_failed(request.remote_addr)
    return response


@blp.after_request
def answer_capi_errors_as_graph_api(response: Response) -> Response:
    """Meta's SDKs take an answer without Graph API's `error` object for a success (and then fail on
    it), so a CAPI error carries one too, beside Herald's own fields."""
    if request.endpoint in CAPI_ENDPOINTS and response.status_code >= 400 and response.is_json:
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            body["error"] = {"message": body.get("message"), "type": "OAuthException",
                             "code": _GRAPH_ERROR_CODES.get(response.status_code, 100),
                             "fbtrace_id": g.get("request_id")}
            response.set_data(current_app.json.dumps(body))
    return response


def _error_answers(schema: type[IngestErrorSchema], *,
                   not_found: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Document the error statuses an ingest route answers."""
    reasons = {**doc.ERRORS, **({404: not_found} if not_found else {})}

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        for status, reason in sorted(reasons.items()):
            view = blp.alt_response(status, schema=schema, description=reason)(view)
        return view

    return decorate


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
@blp.doc(requestBody=doc.SHOPIFY_BODY)
@_error_answers(IngestErrorSchema)
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


_CAPI_DOC: dict[str, Any] = {"parameters": [doc.INGEST_KEY, doc.CAPI_ACCESS_TOKEN], "requestBody": doc.CAPI_BODY}


@blp.route("/facebook-pixel/<uuid:source_id>", methods=["POST"])
@blp.doc(**_CAPI_DOC)
@_error_answers(GraphErrorSchema)
@blp.response(202, CapiAcceptedSchema)
def facebook_pixel(source_id: uuid.UUID):
    """Meta Conversions-API events, as Meta's clients send them.

    Up to 1,000 events, as JSON or as a form (url-encoded or multipart) whose `data` field is the JSON
    array; an event may be JSON-encoded. The source's ingest key in `X-Ingest-Key` or, as Graph API
    takes it, `access_token` (query string or body). The answer carries Meta's own fields too.
    """
    return _capi(source_id)


@blp.route("/facebook-pixel/<graph_version>/<uuid:source_id>/events", methods=["POST"])
@blp.doc(**_CAPI_DOC)
@_error_answers(GraphErrorSchema, not_found=doc.GRAPH_VERSION_NOT_FOUND)
@blp.response(202, CapiAcceptedSchema)
def facebook_pixel_graph(graph_version: str, source_id: uuid.UUID):
    """Meta Conversions-API events at Graph API's own path (`/{version}/{pixel id}/events`).

    For clients that build that path themselves: the facebook-business SDK with `FacebookSession.GRAPH`
    set to `<Herald>/ingest/facebook-pixel` and the source's id as the pixel id. Bodies and keys as
    on `/ingest/facebook-pixel/{source_id}`.
    """
    if not GRAPH_VERSION.fullmatch(graph_version):
        raise NotFound(f"{graph_version!r} is not a Graph API version (e.g. v21.0).")
    return _capi(source_id)


def _capi(source_id: uuid.UUID) -> dict[str, Any]:
    key = request.headers.get(doc.INGEST_KEY_HEADER) or request.args.get("access_token")
    body = None
    if key is None:  # Meta's curl examples send the token as a form field beside `data`
        try:
            body = _capi_body()
        except ValidationFailed:
            body = {}  # an unreadable body carries no key either: 401
        key = body.get("access_token")
    ingestion.verify_ingest_key(source_id, "facebook_pixel", key if isinstance(key, str) else None)
    batch = CapiBatchSchema().load(_capi_body() if body is None else body)
    result = ingestion.store_events(source_id, ingestion.capi_events(batch))
    return {"accepted": result.accepted, "duplicates": result.duplicates,
            "events_received": result.accepted, "messages": [], "fbtrace_id": g.get("request_id")}


def _capi_body() -> dict[str, Any]:
    if request.mimetype in FORM_TYPES:
        return request.form.to_dict()
    return read_capi_json(request.get_data(cache=False))


@blp.route("/gtm/<uuid:source_id>", methods=["POST"])
@blp.doc(parameters=[doc.INGEST_KEY, *doc.GA4_QUERY], requestBody=doc.GA4_BODY)
@_error_answers(IngestErrorSchema)
@blp.response(202, AcceptedSchema)
def gtm(source_id: uuid.UUID):
    """GA4 events: a Measurement-Protocol batch, or server-side GTM event data.

    A batch of a web stream (`client_id`) or an app stream (`app_instance_id`, `firebase_app_id` in the
    query), or the event data a server-side GTM container forwards (one object or a list). Fields
    Herald does not read are kept as sent. The source's ingest key in `X-Ingest-Key` or, as MP takes
    it, `api_secret`.
    """
    key = request.headers.get(doc.INGEST_KEY_HEADER) or request.args.get("api_secret")
    ingestion.verify_ingest_key(source_id, "gtm", key)
    loaded = load_gtm_request(parse_json(request.get_data(cache=False)), request.args)
    events = ingestion.ga4_events(loaded.batch) if loaded.batch is not None else \
        ingestion.event_data_events(loaded.event_data)
    return ingestion.store_events(source_id, events)
