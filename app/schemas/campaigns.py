"""Schemas for campaigns, their channels, state-change actions, stats and the delivery ledger."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from app.channels.catalogue import CHANNEL_TYPES
from app.models.campaigns import CAMPAIGN_STATUSES
from app.models.deliveries import DELIVERY_STATUSES
from app.schemas.base import CamelSchema, UtcDateTime, name_field, no_nul, postgres_json

NAME_MAX = 200
DESCRIPTION_MAX = 5000
CONFIG_KEYS_MAX = 50
CONFIG_KEY_MAX = 200
ACTION_ROUTES = "/schedule, /unschedule, /launch, /pause, /resume or /cancel"
CHANNEL_CONFIG_DOC = {
    "description": "Per channelType. email: fromEmail, fromName, subject*, html*, text* (html and/or text), "
    "replyTo; sms: body*; push: title*, body*, url (https), icon (https); whatsapp: templateName, language "
    "(en or en_US), parameters* (list). Any type may add messagesPerSecond (0 < n <= 10000). * a template "
    "over `contact`, e.g. {{ contact.firstName }}. On update, fields are merged over the stored config; "
    "an optional field set to null is removed."
}


# --- Output -------------------------------------------------------------------------------------

class ChannelSchema(CamelSchema):
    id = fields.UUID()
    channel_type = fields.String()
    config = fields.Dict()
    status = fields.String(metadata={"description": "pending, sending, sent or failed."})
    sent_count = fields.Integer()
    delivered_count = fields.Integer()
    opened_count = fields.Integer()
    clicked_count = fields.Integer()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class CampaignSchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String()
    status = fields.String(metadata={"description": "draft, scheduled, running, paused or completed."})
    scheduled_at = UtcDateTime()
    started_at = UtcDateTime()
    ended_at = UtcDateTime()
    config = fields.Dict()
    conversation_id = fields.UUID()
    channels = fields.List(fields.Nested(ChannelSchema))
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


# --- Campaign input -----------------------------------------------------------------------------

def _name_field(**kwargs: Any) -> fields.String:
    return name_field(NAME_MAX, **kwargs)


def _config_field(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=CONFIG_KEY_MAX)),
        values=fields.Raw(allow_none=True),
        validate=[validate.Length(max=CONFIG_KEYS_MAX), postgres_json],
        metadata={"description": "Free-form campaign settings (any JSON, at most 50 keys); replaced whole on update."},
        **kwargs,
    )


class CampaignUpdateSchema(CamelSchema):
    name = _name_field()
    description = fields.String(allow_none=True, validate=[validate.Length(max=DESCRIPTION_MAX), no_nul])
    config = _config_field()
    conversation_id = fields.UUID(allow_none=True, metadata={"description": "One of the merchant's conversations."})

    @pre_load
    def _refuse_read_only(self, data: Any, **kwargs: Any) -> Any:
        # Named, rather than a bare "Unknown field.", so a client knows where state changes happen.
        if isinstance(data, Mapping):
            read_only = sorted({"status", "scheduledAt", "startedAt", "endedAt"} & data.keys())
            if read_only:
                message = f"Read-only; it changes through {ACTION_ROUTES}."
                raise ValidationError({name: [message] for name in read_only})
        return data


class CampaignCreateSchema(CampaignUpdateSchema):
    name = _name_field(required=True)
    config = _config_field(load_default=dict)


class CampaignQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(CAMPAIGN_STATUSES))


class ScheduleSchema(CamelSchema):
    scheduled_at = UtcDateTime(required=True, metadata={"description": "In the future; a time without an "
                                                                      "offset is read as UTC."})


# --- Channel input ------------------------------------------------------------------------------

def _channel_type_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(CHANNEL_TYPES), **kwargs)


class ChannelCreateSchema(CamelSchema):
    channel_type = _channel_type_field(required=True)
    config = fields.Dict(keys=fields.String(), required=True, metadata=CHANNEL_CONFIG_DOC)


class ChannelUpdateSchema(CamelSchema):
    channel_type = _channel_type_field(metadata={"description": "Cannot change; accepted only if unchanged."})
    config = fields.Dict(keys=fields.String(), metadata=CHANNEL_CONFIG_DOC)


# --- Stats and the ledger -----------------------------------------------------------------------

LedgerSchema = Schema.from_dict({status: fields.Integer() for status in DELIVERY_STATUSES}, name="DeliveryLedger")


class RatesSchema(CamelSchema):
    delivery = fields.Float(metadata={"description": "delivered / sent."})
    open = fields.Float(metadata={"description": "opened / delivered (/ sent while nothing is confirmed delivered)."})
    click = fields.Float(metadata={"description": "clicked / delivered."})
    bounce = fields.Float(metadata={"description": "bounced / sent."})
    complaint = fields.Float(metadata={"description": "complained / sent."})


class TallySchema(CamelSchema):
    sent_count = fields.Integer()
    delivered_count = fields.Integer()
    opened_count = fields.Integer()
    clicked_count = fields.Integer()
    ledger = fields.Nested(LedgerSchema, metadata={"description": "Ledger rows by delivery status."})
    deferred_count = fields.Integer(metadata={
        "description": "Queued rows waiting for a later try: the provider refused them for now (e.g. an SMTP 4xx)."})
    bounced_count = fields.Integer(metadata={
        "description": "Deliveries that bounced: a hard bounce (or BOUNCE_SOFT_LIMIT soft ones in a row), by mail, "
                       "provider webhook or the relay's refusal of an unknown mailbox. Each delivery once."})
    soft_bounced_count = fields.Integer(metadata={
        "description": "Deliveries that bounced softly (a full mailbox, a delay), each once."})
    complained_count = fields.Integer(metadata={
        "description": "Deliveries whose recipient marked the message as spam, each once."})
    rates = fields.Nested(RatesSchema, metadata={"description": "0 when the denominator is 0; 4 decimals."})


class SendProblemSchema(CamelSchema):
    code = fields.String(metadata={"description": "provider_unavailable, rate_limited or quota_reached."})
    message = fields.String()
    since = UtcDateTime()


class ChannelStatsSchema(TallySchema):
    channel_id = fields.UUID()
    channel_type = fields.String()
    status = fields.String()
    problem = fields.Nested(SendProblemSchema, allow_none=True, metadata={
        "description": "Why the channel is not sending right now; null when nothing holds it up."})


class PreparationSchema(CamelSchema):
    preparing = fields.Boolean(metadata={"description": "The ledger is still being written (sending has begun)."})
    rows_written = fields.Integer(metadata={"description": "Ledger rows written so far, every channel together."})
    audience_size = fields.Integer(allow_none=True, metadata={
        "description": "Contacts in the campaign's audiences, once the whole ledger is written."})


class CampaignStatsSchema(CamelSchema):
    campaign_id = fields.UUID()
    status = fields.String()
    channels = fields.List(fields.Nested(ChannelStatsSchema))
    totals = fields.Nested(TallySchema)
    preparation = fields.Nested(PreparationSchema, allow_none=True, metadata={
        "description": "How far the launch has written the ledger; null before launch."})


class DeliveryQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    channel_id = fields.UUID()
    after = fields.UUID(metadata={
        "description": "The id of the last delivery of the previous page: the rows after it, however deep "
                       "(keyset pagination; `page` then stays 1). Faster than `page` on big ledgers."})


class DeliverySchema(CamelSchema):
    id = fields.UUID()
    channel_id = fields.UUID()
    channel_type = fields.String()
    contact_id = fields.UUID(metadata={"description": "Null once the contact is deleted; the row stays counted."})
    address = fields.String()
    status = fields.String(metadata={"description": "queued, sending, sent, delivered, failed, skipped or unknown "
                                                    "(a crash left the send's outcome unknown)."})
    skip_reason = fields.String()
    error = fields.String(attribute="shown_error", metadata={
        "description": "Why the row failed, waits or is unknown; for a queued row, why its channel is held up."})
    next_try_at = UtcDateTime(attribute="not_before", metadata={
        "description": "When a row the provider deferred is tried again."})
    sent_at = UtcDateTime()
    delivered_at = UtcDateTime()
    opened_at = UtcDateTime()
    clicked_at = UtcDateTime()
    created_at = UtcDateTime()
