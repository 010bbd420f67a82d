"""Schemas for webhook endpoints and their deliveries."""
from __future__ import annotations

from marshmallow import fields, validate

from app.models.webhooks import WEBHOOK_DELIVERY_STATUSES
from app.schemas.base import BoundedList, CamelSchema, UtcDateTime, no_nul
from app.webhooks.catalogue import EVENT_TYPES
from app.webhooks.urls import URL_MAX

DESCRIPTION_MAX = 500
EVENT_TYPES_DOC = "; ".join(f"`{name}`: {meaning}" for name, meaning in EVENT_TYPES.items())


def _url(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(min=1, max=URL_MAX), no_nul], metadata={
        "description": "Where events are posted: an https URL of a public host."}, **kwargs)


def _event_types(**kwargs) -> BoundedList:
    return BoundedList(fields.String(validate=validate.OneOf(tuple(EVENT_TYPES))), min_length=1,
                       max_length=len(EVENT_TYPES), metadata={"description": EVENT_TYPES_DOC}, **kwargs)


def _description() -> fields.String:
    return fields.String(allow_none=True, validate=[validate.Length(max=DESCRIPTION_MAX), no_nul],
                         metadata={"description": "What the endpoint is for, to recognise it."})


class WebhookEndpointCreateSchema(CamelSchema):
    url = _url(required=True)
    event_types = _event_types(required=True)
    description = _description()


class WebhookEndpointUpdateSchema(CamelSchema):
    url = _url()
    event_types = _event_types()
    description = _description()
    enabled = fields.Boolean(truthy={True}, falsy={False}, metadata={
        "description": "false disables the endpoint (its pending deliveries fail); true enables it again, its "
                       "failure record cleared."})


class WebhookEndpointSchema(CamelSchema):
    id = fields.UUID()
    url = fields.String()
    description = fields.String(allow_none=True)
    event_types = fields.List(fields.String())
    enabled = fields.Boolean()
    disabled_at = UtcDateTime(allow_none=True)
    disabled_reason = fields.String(allow_none=True, metadata={
        "description": "Why the endpoint was disabled: by the merchant, or after failing for WEBHOOK_RETRY_HOURS."})
    failing_since = UtcDateTime(allow_none=True, metadata={
        "description": "Since when every attempt has failed; null when the last one succeeded."})
    consecutive_failures = fields.Integer(metadata={"description": "Failed attempts since the last success."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class CreatedWebhookEndpointSchema(WebhookEndpointSchema):
    secret = fields.String(metadata={"description": "The signing secret, shown only in this answer: verify each "
                                                    "request's Herald-Signature with it."})


class WebhookEventSchema(CamelSchema):
    id = fields.UUID(metadata={"description": "The event's id (Herald-Event-Id): the same on every attempt and replay."})
    type = fields.String()
    created_at = UtcDateTime()
    data = fields.Dict()


class WebhookDeliverySchema(CamelSchema):
    id = fields.UUID()
    event = fields.Nested(WebhookEventSchema)
    status = fields.String(metadata={"description": ", ".join(WEBHOOK_DELIVERY_STATUSES) + "."})
    attempts = fields.Integer()
    next_attempt_at = fields.Method("_next_attempt", allow_none=True, metadata={
        "type": "string", "format": "date-time", "description": "When it is tried next; null unless pending."})
    last_attempt_at = UtcDateTime(allow_none=True)
    response_status = fields.Integer(allow_none=True, metadata={"description": "The HTTP status of the last answer."})
    response_body = fields.String(allow_none=True, metadata={"description": "The start of the last answer's body."})
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    delivered_at = UtcDateTime(allow_none=True)
    replay_of = fields.UUID(allow_none=True, metadata={"description": "The delivery this one replays."})
    created_at = UtcDateTime()

    def _next_attempt(self, delivery) -> str | None:
        if delivery.status != "pending":
            return None
        return UtcDateTime()._serialize(delivery.next_attempt_at, "next_attempt_at", delivery)


class WebhookDeliveryQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(WEBHOOK_DELIVERY_STATUSES))
