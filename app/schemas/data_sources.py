"""Schemas for data sources, their ingest keys, sync runs and events."""
from __future__ import annotations

from marshmallow import fields, post_dump, validate

from app.models.data_sources import SOURCE_STATUSES, SOURCE_TYPES
from app.schemas.base import CamelSchema, UtcDateTime
from app.services.data_sources import EVENT_STATUSES

NAME_MAX = 200
EVENT_TYPE_MAX = 200
# `error` is set by syncs, never by the merchant.
SETTABLE_STATUSES = ("active", "inactive")
CONFIG_DOC = {
    "description": "Per sourceType. shopify: shopDomain, accessToken*, webhookSecret* (the app's client secret), "
    "apiVersion, backfillDays; facebook_pixel: pixelId, accessToken*?, apiVersion; gtm: containerId (GTM-XXXXXXX), "
    "accessToken*?, accountId and apiContainerId (the numeric ids the Tag Manager API uses; required with an "
    "accessToken), measurementId. ? optional: without an accessToken a pixel or GTM source only receives events; "
    "with one, Herald also checks the connection. * secret: encrypted at rest and always shown as \"********\"; "
    "on update, a secret left out or sent as \"********\" keeps its stored value.",
    "example": {"containerId": "GTM-ABC1234"},
}


def _source_type_field(**kwargs) -> fields.String:
    return fields.String(validate=validate.OneOf(SOURCE_TYPES), **kwargs)


def _name_field(**kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=NAME_MAX), **kwargs)


class DataSourceCreateSchema(CamelSchema):
    source_type = _source_type_field(required=True)
    name = _name_field(required=True)
    config = fields.Dict(keys=fields.String(), required=True, metadata=CONFIG_DOC)


class DataSourceUpdateSchema(CamelSchema):
    source_type = _source_type_field(metadata={"description": "Cannot change; accepted only if unchanged."})
    name = _name_field()
    config = fields.Dict(keys=fields.String(), metadata=CONFIG_DOC)
    status = fields.String(validate=validate.OneOf(SETTABLE_STATUSES))


class DataSourceQuerySchema(CamelSchema):
    source_type = _source_type_field()
    status = fields.String(validate=validate.OneOf(SOURCE_STATUSES))


class WebhookRegistrationSchema(CamelSchema):
    status = fields.String(metadata={"description": "pending (a worker is on it), registered, or failed "
                                     "(Shopify refused: see lastError; changing the config tries again)."})
    topics = fields.List(fields.String(), metadata={"description": "The X-Shopify-Topic of every subscription "
                                                                   "registered."})
    address = fields.String(allow_none=True, metadata={"description": "Where Shopify delivers them."})
    registered_at = UtcDateTime(allow_none=True)
    last_error = fields.String(allow_none=True)


class DataSourceSchema(CamelSchema):
    id = fields.UUID()
    source_type = fields.String()
    name = fields.String()
    config = fields.Dict(metadata={"description": "Secrets are always shown as \"********\"."})
    status = fields.String(metadata={"description": "active, inactive, or error (set by a failed sync)."})
    last_sync_at = UtcDateTime(allow_none=True)
    last_error = fields.String(allow_none=True, metadata={"description": "Why the last sync failed, while status is error."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
    has_ingest_key = fields.Boolean()
    webhooks = fields.Nested(WebhookRegistrationSchema, allow_none=True, metadata={
        "description": "shopify only: the webhook subscriptions Herald keeps in the shop; null for other types."})


class CreatedDataSourceSchema(DataSourceSchema):
    ingest_key = fields.String(
        metadata={"description": "facebook_pixel and gtm only: the ingest key, shown only in this answer."}
    )

    @post_dump
    def _omit_missing_key(self, data: dict, **kwargs) -> dict:
        if data.get("ingestKey") is None:
            data.pop("ingestKey", None)
        return data


class IngestKeySchema(CamelSchema):
    ingest_key = fields.String(metadata={"description": "Send as X-Ingest-Key; shown only in this answer."})


class SyncRunSchema(CamelSchema):
    id = fields.UUID()
    trigger = fields.String(metadata={"description": "manual, schedule, or config (the source's config changed)."})
    status = fields.String(metadata={"description": "running, succeeded or failed."})
    started_at = UtcDateTime()
    finished_at = UtcDateTime(allow_none=True)
    events_created = fields.Integer()
    error = fields.String(allow_none=True)


class DataEventQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    event_type = fields.String(validate=validate.Length(min=1, max=EVENT_TYPE_MAX))


class DataEventSchema(CamelSchema):
    id = fields.UUID()
    event_type = fields.String()
    event_data = fields.Dict()
    processed_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    status = fields.String(metadata={"description": "pending, processed, or quarantined (processing gave up)."})
    error = fields.String(allow_none=True, metadata={"description": "The last processing error, if any."})
