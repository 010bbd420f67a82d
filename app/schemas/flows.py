"""Flows on the wire. The definition's inner parts are checked by app.services.flows, which names the
JSON path of every bad part (`steps[1].config.subject`, `filter.conditions[0].event`)."""
from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from app.models.flows import ENROLLMENT_STATUSES, FLOW_STATUSES
from app.schemas.base import CamelSchema, UtcDateTime
from app.schemas.campaigns import CHANNEL_CONFIG_DOC, ChannelStatsSchema

EXAMPLE = {
    "name": "Abandoned checkout",
    "trigger": {"event": "checkout_started"},
    "exitWhen": [{"event": "order_placed"}],
    "reentry": {"mode": "once"},
    "steps": [
        {"delaySeconds": 3600, "channelType": "email",
         "config": {"subject": "You left something behind", "fromEmail": "shop@example.org",
                    "html": "<p>Hi {{ contact.firstName }}, your cart is waiting: "
                            "<a href=\"{{ event.checkoutUrl }}\">finish your order</a>.</p>"}},
    ],
}


def _definition_fields(required: bool) -> dict[str, Any]:
    return {
        "name": fields.String(required=required, validate=validate.Length(1, 200)),
        "trigger": fields.Dict(required=required, metadata={
            "description": "The event that enrols a contact: {event, name (custom events), where (property filters, "
                           "as in an audience's event condition)}."}),
        "filter": fields.Dict(allow_none=True, metadata={
            "description": "An audience definition (SPEC §6): who may enter, checked when they would enter."}),
        "exitWhen": fields.List(fields.Dict(), metadata={
            "description": "Events that end an enrolment when the contact does one after entering: [{event, name, "
                           "where}]."}),
        "reentry": fields.Dict(metadata={
            "description": "{mode: once (default) | afterDays (with days) | always (every trigger event)}."}),
        "steps": fields.List(fields.Dict(), required=required, validate=validate.Length(1, 20), metadata={
            "description": "1 to 20 steps: {delaySeconds (after the previous step; the first after the triggering "
                           "event's own time), channelType, config (a campaign channel config; templates also see "
                           "`event.*`, the triggering event's properties)}. " + CHANNEL_CONFIG_DOC["description"]}),
    }


FlowCreateSchema = CamelSchema.from_dict(_definition_fields(required=True), name="FlowCreate")
FlowUpdateSchema = CamelSchema.from_dict(_definition_fields(required=False), name="FlowUpdate")


class FlowStepSchema(CamelSchema):
    delay_seconds = fields.Integer()
    channel_type = fields.String(attribute="channel.channel_type")
    channel_id = fields.UUID(metadata={"description": "The step's channel: its ledger rows and counters."})
    config = fields.Dict(attribute="channel.config")
    frequency_cap_exempt = fields.Boolean(metadata={
        "description": "The step's messages ignore the frequency caps (they still count toward them)."})


class FlowSchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    status = fields.String(metadata={"description": ", ".join(FLOW_STATUSES)})
    trigger = fields.Dict()
    filter = fields.Dict(allow_none=True)
    exit_when = fields.List(fields.Dict())
    reentry = fields.Dict()
    steps = fields.List(fields.Nested(FlowStepSchema))
    activated_at = UtcDateTime(allow_none=True)
    stopped_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class FlowQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(FLOW_STATUSES))


class EnrollmentQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(ENROLLMENT_STATUSES))


class EnrollmentSchema(CamelSchema):
    id = fields.UUID()
    contact_id = fields.UUID(allow_none=True, metadata={"description": "Null once the contact is deleted."})
    status = fields.String(metadata={"description": ", ".join(ENROLLMENT_STATUSES)})
    exit_reason = fields.String(allow_none=True, metadata={
        "description": "event:<type> (an exit event), contact_deleted or flow_stopped; null unless exited."})
    entered_at = UtcDateTime(attribute="created_at")
    triggered_at = UtcDateTime(metadata={"description": "The triggering event's own time: delays count from it."})
    current_step = fields.Integer(attribute="step", metadata={
        "description": "0-based: the next step to run (the number of steps done)."})
    next_step_due_at = UtcDateTime(attribute="next_due_at", allow_none=True)
    ended_at = UtcDateTime(allow_none=True)


class StepStatsSchema(CamelSchema):
    position = fields.Integer()
    delay_seconds = fields.Integer()
    channel = fields.Nested(ChannelStatsSchema, metadata={
        "description": "The same counters as a campaign channel's: sent, delivered, opened, clicked, failed, "
                       "skipped with reasons, bounces, attributed orders."})


class FlowStatsSchema(CamelSchema):
    flow_id = fields.UUID()
    status = fields.String()
    entered = fields.Integer()
    active = fields.Integer()
    completed = fields.Integer()
    exited = fields.Integer()
    exit_reasons = fields.Dict(keys=fields.String(), values=fields.Integer())
    steps = fields.List(fields.Nested(StepStatsSchema))
