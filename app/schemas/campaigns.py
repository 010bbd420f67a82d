"""Schemas for campaigns, their channels, state-change actions, stats and the delivery ledger."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from app.channels.catalogue import CHANNEL_TYPES
from app.models.campaigns import CAMPAIGN_STATUSES, PASSED_ZONES
from app.models.deliveries import DELIVERY_STATUSES
from app.schemas.base import CamelSchema, UtcDateTime, name_field, no_nul, postgres_json

NAME_MAX = 200
DESCRIPTION_MAX = 5000
CONFIG_KEYS_MAX = 50
CONFIG_KEY_MAX = 200
UTM_VALUE_MAX = 100
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
    description = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "draft, scheduled, running, paused or completed."})
    scheduled_at = UtcDateTime(allow_none=True)
    started_at = UtcDateTime(allow_none=True)
    ended_at = UtcDateTime(allow_none=True)
    config = fields.Dict()
    conversation_id = fields.UUID(allow_none=True)
    recipient_local_time = fields.Function(
        lambda c: c.send_options.local_time.isoformat() if c.send_options and c.send_options.local_time else None,
        metadata={"description": "The wall-clock time each recipient gets it at in their own timezone (null: "
                                 "everyone at scheduledAt, which is then when the first zone reaches it)."})
    passed_zones = fields.Function(lambda c: c.send_options.passed_zones if c.send_options else "next_day")
    frequency_cap_exempt = fields.Function(lambda c: bool(c.send_options and c.send_options.frequency_cap_exempt),
                                           metadata={"description": "The merchant's frequency caps do not apply."})
    channels = fields.List(fields.Nested(ChannelSchema))
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


# --- Campaign input -----------------------------------------------------------------------------

def _name_field(**kwargs: Any) -> fields.String:
    return name_field(NAME_MAX, **kwargs)


class CampaignUtmSchema(CamelSchema):
    """A campaign's own UTM choice, over the merchant's `utm` setting."""

    enabled = fields.Boolean(truthy={True}, falsy={False})
    source = fields.String(validate=[validate.Length(min=1, max=UTM_VALUE_MAX), no_nul])
    campaign = fields.String(validate=[validate.Length(min=1, max=UTM_VALUE_MAX), no_nul])


def _known_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Errors in the keys of a campaign's config that Herald itself reads (by key)."""
    if "utm" not in config or isinstance(config["utm"], bool):
        return {}
    if not isinstance(config["utm"], Mapping):
        return {"utm": ["Must be true, false or an object with enabled, source and campaign."]}
    errors = CampaignUtmSchema().validate(config["utm"])
    return {"utm": errors} if errors else {}


def _config_field(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=CONFIG_KEY_MAX)),
        values=fields.Raw(allow_none=True),
        validate=[validate.Length(max=CONFIG_KEYS_MAX), postgres_json],
        metadata={"description": "Campaign settings (any JSON, at most 50 keys); replaced whole on update. Herald "
                                 "reads `utm`: false (no UTM tags on this campaign's links, whatever the merchant's "
                                 "setting), true, or {\"enabled\", \"source\", \"campaign\"} to override the "
                                 "merchant's source and the campaign name's slug. Left out: the merchant's setting."},
        **kwargs,
    )


class CampaignUpdateSchema(CamelSchema):
    name = _name_field()
    description = fields.String(allow_none=True, validate=[validate.Length(max=DESCRIPTION_MAX), no_nul])
    config = _config_field()
    frequency_cap_exempt = fields.Boolean(metadata={
        "description": "Send regardless of the merchant's frequency caps (e.g. a back-in-stock alert); its "
                       "messages still count toward them."})
    conversation_id = fields.UUID(allow_none=True, metadata={"description": "One of the merchant's conversations."})

    @validates_schema
    def _config_settings(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors = _known_settings(data.get("config") or {})
        if errors:
            raise ValidationError(errors, "config")  # reported at config.<key>

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
    scheduled_at = fields.DateTime(required=True, metadata={
        "description": "In the future; a time without an offset is read as UTC. With recipientLocalTime: a "
                       "wall-clock time without an offset, which each recipient gets the campaign at in their "
                       "own timezone."})
    recipient_local_time = fields.Boolean(load_default=False, metadata={
        "description": "Send at scheduledAt's wall-clock time in each recipient's timezone."})
    passed_zones = fields.String(load_default="next_day", validate=validate.OneOf(PASSED_ZONES), metadata={
        "description": "With recipientLocalTime, recipients whose local time has already passed at launch: "
                       "next_day (they get it at that time tomorrow) or skip (skipped, reason local_time_passed)."})

    @validates_schema
    def _local_time_has_no_offset(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("recipient_local_time") and data["scheduled_at"].tzinfo is not None:
            raise ValidationError("With recipientLocalTime, give a wall-clock time without an offset "
                                  "(each recipient's own timezone applies).", "scheduledAt")

    @post_load
    def _to_utc(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        at = data["scheduled_at"]
        if data["recipient_local_time"]:
            data["local_time"] = at
        elif at.tzinfo is not None:
            data["scheduled_at"] = at.astimezone(UTC).replace(tzinfo=None)
        return data


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


class MoneySchema(CamelSchema):
    currency = fields.String(allow_none=True, metadata={
        "description": "ISO 4217, as the order events gave it; null for orders that named none."})
    amount = fields.String(metadata={"description": "A decimal string to the currency's minor unit, e.g. \"12.50\"."})


class TallySchema(CamelSchema):
    sent_count = fields.Integer()
    delivered_count = fields.Integer()
    opened_count = fields.Integer()
    clicked_count = fields.Integer()
    ledger = fields.Nested(LedgerSchema, metadata={"description": "Ledger rows by delivery status."})
    deferred_count = fields.Integer(metadata={
        "description": "Queued rows waiting for a later time: their recipient's local time, the end of their quiet "
                       "hours, or a retry after the provider refused them for now (e.g. an SMTP 4xx)."})
    skip_reasons = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Skipped rows by reason: no_address, consent_<value>, frequency_capped, local_time_passed, "
                       "cancelled."})
    deferred_by = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Rows that had to wait (sent since or still waiting), by what made them wait last: "
                       "quiet_hours, local_time or provider."})
    bounced_count = fields.Integer(metadata={
        "description": "Deliveries that bounced: a hard bounce (or BOUNCE_SOFT_LIMIT soft ones in a row), by mail, "
                       "provider webhook or the relay's refusal of an unknown mailbox. Each delivery once."})
    soft_bounced_count = fields.Integer(metadata={
        "description": "Deliveries that bounced softly (a full mailbox, a delay), each once."})
    complained_count = fields.Integer(metadata={
        "description": "Deliveries whose recipient marked the message as spam, each once."})
    rates = fields.Nested(RatesSchema, metadata={"description": "0 when the denominator is 0; 4 decimals."})
    attributed_orders = fields.Integer(attribute="credited.orders", metadata={
        "description": "Orders credited to these messages: placed within the click (or open) window after the "
                       "contact's last click (or open), each order once."})
    attributed_revenue = fields.List(fields.Nested(MoneySchema), attribute="credited.amounts", metadata={
        "description": "The credited orders' value, one entry per currency (orders without a value add none)."})


class SendProblemSchema(CamelSchema):
    code = fields.String(metadata={"description": "provider_unavailable, rate_limited or quota_reached."})
    message = fields.String()
    since = UtcDateTime()


class VariantStatsSchema(CamelSchema):
    variant = fields.Integer(metadata={"description": "0-based, in the order of the channel's abTest.variants."})
    overrides = fields.Dict(metadata={"description": "The fields this variant sets over the channel's config."})
    recipients = fields.Integer(metadata={"description": "Ledger rows given this variant (skipped ones aside)."})
    sent_count = fields.Integer()
    delivered_count = fields.Integer()
    opened_count = fields.Integer(metadata={"description": "Unique opens."})
    clicked_count = fields.Integer(metadata={"description": "Unique clicks."})
    score = fields.Float(allow_none=True, metadata={
        "description": "The winning metric per message sent when the winner was chosen; null before."})
    winner = fields.Boolean()
    attributed_orders = fields.Integer(attribute="credited.orders")
    attributed_revenue = fields.List(fields.Nested(lambda: MoneySchema()), attribute="credited.amounts")


class AbTestStatsSchema(CamelSchema):
    test_percent = fields.Float()
    metric = fields.String()
    ends_at = UtcDateTime()
    decided_at = UtcDateTime(allow_none=True)
    winner = fields.Integer(allow_none=True, metadata={"description": "Null until the test ends."})
    variants = fields.List(fields.Nested(VariantStatsSchema))


class ChannelStatsSchema(TallySchema):
    channel_id = fields.UUID()
    channel_type = fields.String()
    status = fields.String()
    ab_test = fields.Nested(AbTestStatsSchema, allow_none=True, metadata={
        "description": "The channel's A/B test, per variant (winners included once chosen); null: none."})
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
    contact_id = fields.UUID(allow_none=True, metadata={
        "description": "Null once the contact is deleted; the row stays counted."})
    address = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "queued, sending, sent, delivered, failed, skipped or unknown "
                                                    "(a crash left the send's outcome unknown)."})
    skip_reason = fields.String(allow_none=True)
    error = fields.String(attribute="shown_error", allow_none=True, metadata={
        "description": "Why the row failed, waits or is unknown; for a queued row, why its channel is held up."})
    next_try_at = fields.Method("_next_try_at", metadata={
        "description": "A queued row: when it may go out (its recipient's local time, the end of their quiet "
                       "hours, or a provider's retry)."})
    deferred_by = fields.String(allow_none=True, metadata={
        "description": "What made the row wait: quiet_hours, local_time or provider; null: nothing."})
    variant = fields.Integer(allow_none=True, metadata={
        "description": "The A/B variant the recipient got (0-based); null: no test or not decided yet."})
    sent_at = UtcDateTime(allow_none=True)
    delivered_at = UtcDateTime(allow_none=True)
    opened_at = UtcDateTime(allow_none=True)
    clicked_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()

    def _next_try_at(self, delivery: Any) -> str | None:
        if delivery.status != "queued" or delivery.not_before is None:
            return None
        return UtcDateTime()._serialize(delivery.not_before, "not_before", delivery)
