"""What Herald holds about one person: their consent history and the export of everything."""
from __future__ import annotations

from marshmallow import fields

from app.schemas.base import CamelSchema, UtcDateTime
from app.schemas.contacts import ContactSchema
from app.schemas.suppressions import SuppressionSchema


class ConsentChangeSchema(CamelSchema):
    channel = fields.String()
    value = fields.String(metadata={"description": "subscribed, unsubscribed, bounced or complained."})
    source = fields.String(allow_none=True, metadata={
        "description": "Who the value is taken from: contact, merchant, source (synced data) or provider."})
    via = fields.String(allow_none=True, metadata={
        "description": "How it was written: api, import, event, unsubscribe_link, provider, suppression, erasure."})
    ip = fields.String(allow_none=True, metadata={"description": "For the person's own action: their IP address."})
    user_agent = fields.String(allow_none=True)
    created_at = UtcDateTime()


class ActivitySchema(CamelSchema):
    event_type = fields.String()
    original_name = fields.String()
    occurred_at = UtcDateTime()
    properties = fields.Dict()


class ExportedMessageSchema(CamelSchema):
    campaign_id = fields.UUID(attribute="Delivery.campaign_id")
    campaign_name = fields.String(attribute="name")
    channel_type = fields.String(attribute="Delivery.channel_type")
    address = fields.String(attribute="Delivery.address", allow_none=True)
    status = fields.String(attribute="Delivery.status")
    skip_reason = fields.String(attribute="Delivery.skip_reason", allow_none=True)
    variant = fields.Integer(attribute="Delivery.variant", allow_none=True)
    sent_at = UtcDateTime(attribute="Delivery.sent_at", allow_none=True)
    delivered_at = UtcDateTime(attribute="Delivery.delivered_at", allow_none=True)
    opened_at = UtcDateTime(attribute="Delivery.opened_at", allow_none=True)
    clicked_at = UtcDateTime(attribute="Delivery.clicked_at", allow_none=True)
    created_at = UtcDateTime(attribute="Delivery.created_at")


class ExportedAttributionSchema(CamelSchema):
    order_key = fields.String()
    campaign_id = fields.UUID()
    touch = fields.String()
    revenue = fields.Decimal(as_string=True, allow_none=True)
    currency = fields.String(allow_none=True)
    occurred_at = UtcDateTime()


class ContactExportSchema(CamelSchema):
    exported_at = UtcDateTime()
    contact = fields.Nested(ContactSchema, metadata={"description": "The profile as the API shows it."})
    consent_history = fields.List(fields.Nested(ConsentChangeSchema))
    activity = fields.List(fields.Nested(ActivitySchema))
    messages = fields.List(fields.Nested(ExportedMessageSchema))
    attributions = fields.List(fields.Nested(ExportedAttributionSchema))
    suppressions = fields.List(fields.Nested(SuppressionSchema))
