"""What the assistant may do: the tool catalogue (OpenAI function specs) and `run_tool`.

Every tool acts for exactly one merchant, the `user_id` the caller passes (the owner of the
conversation being answered); nothing in a model's arguments can name another merchant's rows:
no argument is an id, and unexpected ones (`userId`, `campaignId`, ...) are ignored and reported.

Tools never commit: they run inside the reply's transaction, so a draft campaign exists exactly when
the reply that announces it does. They never schedule or launch anything, nor activate a flow; a
proposed time is only stored in the draft's `config.proposedScheduleAt` for the merchant to act on.
Invalid arguments come back as `{"error": ..., "details": ...}` for the model to correct, not raised.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from app.assistant.backend import ToolCall
from app.channels.catalogue import CHANNEL_TYPES
from app.channels.configs import load_channel_config
from app.errors import HeraldError
from app.extensions import db
from app.models import (
    Audience,
    Campaign,
    CampaignChannel,
    Contact,
    ContactActivity,
    Conversation,
    DataEvent,
    DataSource,
    utcnow,
)
from app.models.contacts import CONSENT_VALUES
from app.schemas.audiences import (
    DEFINITION_DOC,
    AudienceCreateSchema,
    AudiencePreviewRequestSchema,
    AudiencePreviewSchema,
)
from app.schemas.base import BoundedList, CamelSchema, UtcDateTime
from app.schemas.campaigns import (
    CHANNEL_CONFIG_DOC,
    NAME_MAX,
    CampaignCreateSchema,
    ChannelCreateSchema,
)
from app.services import audiences, flows
from app.sources.normalize import NORMALIZED_TYPES

DEFAULT_WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 365

_DEFINITION = {"type": "object", "description": DEFINITION_DOC["description"],
               "properties": {"match": {"type": "string", "enum": ["all", "any"]}, "conditions": {"type": "array"}},
               "required": ["match", "conditions"]}

_FLOW = {"type": "object", "required": ["name", "trigger", "reentry", "steps"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
    "trigger": {"type": "object", "required": ["event"], "properties": {
        "event": {"type": "string", "enum": list(NORMALIZED_TYPES)},
        "where": {"type": "object", "description": "The event's properties, as in an audience event condition's "
                                                   "where: {\"value\": {\"gt\": 100}, \"currency\": \"EUR\"}."}}},
    "filter": {**_DEFINITION, "description": "Who may enter, checked when they would enter (an audience "
                                             "definition). " + DEFINITION_DOC["description"]},
    "exitWhen": {"type": "array", "description": "Events by the contact after entry that end the flow for them.",
                 "items": {"type": "object", "required": ["event"],
                           "properties": {"event": {"type": "string", "enum": list(NORMALIZED_TYPES)}}}},
    "reentry": {"type": "object", "required": ["mode"], "properties": {
        "mode": {"type": "string", "enum": ["once", "afterDays", "always"],
                 "description": "once: a contact enters at most once; afterDays: again after `days`; always: "
                                "on every trigger event (e.g. a thank-you for every order)."},
        "days": {"type": "integer", "minimum": 1}}},
    "steps": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["delaySeconds", "channelType", "config"], "properties": {
            "delaySeconds": {"type": "integer", "minimum": 0,
                             "description": "After the trigger event for the first step, after the step before "
                                            "for the others."},
            "channelType": {"type": "string", "enum": list(CHANNEL_TYPES)},
            "config": {"type": "object", **CHANNEL_CONFIG_DOC}}}}}}

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "data_summary",
        "description": "The merchant's connected data sources, event counts by normalized type over the last "
                       "windowDays days, and contacts with their consent per channel.",
        "parameters": {"type": "object", "properties": {"windowDays": {
            "type": "integer", "minimum": 1, "maximum": MAX_WINDOW_DAYS, "default": DEFAULT_WINDOW_DAYS}}},
    }},
    {"type": "function", "function": {
        "name": "preview_audience",
        "description": "How many of the merchant's contacts an audience definition matches now, with a sample.",
        "parameters": {"type": "object", "required": ["definition"], "properties": {
            "definition": _DEFINITION,
            "sampleSize": {"type": "integer", "minimum": 0, "maximum": 100, "default": 10}}},
    }},
    {"type": "function", "function": {
        "name": "create_draft_campaign",
        "description": "Create a DRAFT campaign with its channels and one audience, linked to this conversation. "
                       "It is never scheduled or launched: the merchant reviews it and schedules or launches it.",
        "parameters": {"type": "object", "required": ["name", "channels", "audience"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
            "description": {"type": "string"},
            "channels": {"type": "array", "minItems": 1, "maxItems": len(CHANNEL_TYPES), "items": {
                "type": "object", "required": ["channelType", "config"], "properties": {
                    "channelType": {"type": "string", "enum": list(CHANNEL_TYPES)},
                    "config": {"type": "object", **CHANNEL_CONFIG_DOC}}}},
            "audience": {"type": "object", "required": ["name", "definition"], "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}, "definition": _DEFINITION}},
            "proposedScheduleAt": {"type": "string", "format": "date-time",
                                   "description": "When you suggest sending (ISO 8601, UTC unless an offset is "
                                                  "given); stored on the draft for the merchant, not scheduled."}}},
    }},
    {"type": "function", "function": {
        "name": "draft_flow",
        "description": "Create a DRAFT triggered flow: when a contact's event happens (e.g. checkout_started), send "
                       "each step's message after its delay, unless an exitWhen event (e.g. order_placed) came first. "
                       "It is never activated: the merchant reviews it and activates it.",
        "parameters": _FLOW,
    }},
]


# --- Arguments ----------------------------------------------------------------------------------

class DataSummaryArguments(CamelSchema):
    window_days = fields.Integer(strict=True, load_default=DEFAULT_WINDOW_DAYS,
                                 validate=validate.Range(1, MAX_WINDOW_DAYS))


class DraftCampaignArguments(CampaignCreateSchema):
    """The API's campaign, channel and audience schemas, composed; `config` and `conversationId` are
    excluded when loading (the conversation is the one being answered)."""

    channels = BoundedList(fields.Nested(ChannelCreateSchema), required=True, min_length=1,
                           max_length=len(CHANNEL_TYPES))
    audience = fields.Nested(AudienceCreateSchema, required=True)
    proposed_schedule_at = UtcDateTime()

    @validates_schema
    def _one_channel_per_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        types = [channel["channel_type"] for channel in data.get("channels", [])]
        if len(types) != len(set(types)):
            raise ValidationError("At most one channel of each type.", "channels")


def _load(schema: Schema, arguments: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The validated arguments, and the names of those ignored (anything the schema does not accept)."""
    accepted = {field.data_key or name for name, field in schema.load_fields.items()}
    return schema.load(arguments, unknown=EXCLUDE), sorted(set(arguments) - accepted)


# --- Tools --------------------------------------------------------------------------------------

def data_summary(user_id: uuid.UUID, window_days: int) -> dict[str, Any]:
    since = utcnow() - timedelta(days=window_days)
    sources = db.session.execute(
        sa.select(DataSource.source_type, DataSource.name, DataSource.status, DataSource.last_sync_at)
        .where(DataSource.user_id == user_id).order_by(DataSource.created_at)
    )
    activity = db.session.execute(
        sa.select(ContactActivity.event_type, sa.func.count())
        .where(ContactActivity.user_id == user_id, ContactActivity.occurred_at >= since)
        .group_by(ContactActivity.event_type).order_by(ContactActivity.event_type)
    )
    raw_events = db.session.scalar(
        sa.select(sa.func.count()).select_from(DataEvent).join(DataSource, DataSource.id == DataEvent.data_source_id)
        .where(DataSource.user_id == user_id, DataEvent.created_at >= since)
    )
    return {
        "windowDays": window_days,
        "sources": [{"type": kind, "name": name, "status": status, "lastSyncAt": _iso(synced)}
                    for kind, name, status, synced in sources],
        "events": {"byType": dict(activity.all()), "rawEvents": raw_events},
        "contacts": _contact_summary(user_id),
    }


def _contact_summary(user_id: uuid.UUID) -> dict[str, Any]:
    """How many contacts, and per channel how many in each consent state: one pass over the
    merchant's contacts, every count an aggregate of it (a million contacts in well under a second)."""
    states = [(channel, value) for channel in CHANNEL_TYPES for value in CONSENT_VALUES]
    counts = db.session.execute(
        sa.select(sa.func.count(), *(sa.func.count().filter(Contact.consent[channel].astext == value)
                                     for channel, value in states))
        .where(Contact.user_id == user_id)
    ).one()
    by_channel: dict[str, dict[str, int]] = {}
    for (channel, value), count in zip(states, counts[1:]):
        if count:
            by_channel.setdefault(channel, {})[value] = count
    return {"total": counts[0], "consent": by_channel}


def preview_audience(user_id: uuid.UUID, definition: dict[str, Any], sample_size: int) -> dict[str, Any]:
    return AudiencePreviewSchema().dump(audiences.preview(user_id, definition, sample_size))


def create_draft_campaign(user_id: uuid.UUID, conversation_id: uuid.UUID, args: dict[str, Any]) -> dict[str, Any]:
    """Campaign, channels and audience flushed together in the caller's transaction, each validated
    by the rules the API applies, all before anything is written."""
    channels = _channel_configs(args["channels"])
    audience_values = {"name": args["audience"]["name"], "definition": dict(args["audience"]["definition"]),
                       "last_size": audiences.audience_size(user_id, args["audience"]["definition"]),
                       "last_computed_at": utcnow()}
    proposed = args.get("proposed_schedule_at")
    campaign = Campaign(user_id=user_id, conversation_id=_own_conversation(user_id, conversation_id),
                        name=args["name"], description=args.get("description"), status="draft",
                        config={"proposedScheduleAt": _iso(proposed)} if proposed else {})
    db.session.add(campaign)
    db.session.flush()
    rows = [CampaignChannel(campaign_id=campaign.id, channel_type=kind, config=config, status="pending")
            for kind, config in channels]
    audience = Audience(campaign_id=campaign.id, **audience_values)
    db.session.add_all([*rows, audience])
    db.session.flush()
    return {"campaignId": str(campaign.id), "name": campaign.name, "status": "draft",
            "proposedScheduleAt": _iso(proposed),
            "channels": [{"id": str(row.id), "channelType": row.channel_type} for row in rows],
            "audience": {"id": str(audience.id), "name": audience.name, "size": audience.last_size}}


def _own_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID) -> uuid.UUID:
    # The caller passes the conversation it is answering; checked again so no caller can link
    # another merchant's. KEY SHARE: it cannot be hard-deleted before the campaign is inserted.
    found = db.session.scalar(
        sa.select(Conversation.id)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
        .with_for_update(read=True, key_share=True)
    )
    if found is None:
        raise HeraldError("The conversation is not one of yours.")
    return found


def _channel_configs(channels: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each channel's config as the API would store it; errors keyed by the channel's position."""
    loaded, errors = [], {}
    for index, channel in enumerate(channels):
        try:
            loaded.append((channel["channel_type"], load_channel_config(channel["channel_type"], channel["config"])))
        except ValidationError as exc:
            errors[index] = {"config": exc.messages}
    if errors:
        raise ValidationError({"channels": errors})
    return loaded


# --- Dispatch -----------------------------------------------------------------------------------

def _run_data_summary(user_id: uuid.UUID, conversation_id: uuid.UUID, arguments: dict[str, Any]) -> dict[str, Any]:
    args, ignored = _load(DataSummaryArguments(), arguments)
    return _noted(data_summary(user_id, args["window_days"]), ignored)


def _run_preview(user_id: uuid.UUID, conversation_id: uuid.UUID, arguments: dict[str, Any]) -> dict[str, Any]:
    args, ignored = _load(AudiencePreviewRequestSchema(), arguments)
    return _noted(preview_audience(user_id, args["definition"], args["sample_size"]), ignored)


def _run_create_draft(user_id: uuid.UUID, conversation_id: uuid.UUID, arguments: dict[str, Any]) -> dict[str, Any]:
    args, ignored = _load(DraftCampaignArguments(exclude=("config", "conversation_id")), arguments)
    return _noted(create_draft_campaign(user_id, conversation_id, args), ignored)


def _run_draft_flow(user_id: uuid.UUID, conversation_id: uuid.UUID, arguments: dict[str, Any]) -> dict[str, Any]:
    return create_draft_flow(user_id, arguments)


def create_draft_flow(user_id: uuid.UUID, definition: dict[str, Any]) -> dict[str, Any]:
    """The one place the assistant creates a flow: `flows.create` validates the definition as the API
    does (a bad one raises ValidationFailed, reported back with the path of each bad part) and stores
    it as a draft. Nothing here activates it."""
    flow = flows.create(user_id, definition)
    return {"flowId": str(flow.id), "name": flow.name, "status": flow.status}


_RUNNERS: dict[str, Callable[[uuid.UUID, uuid.UUID, dict[str, Any]], dict[str, Any]]] = {
    "data_summary": _run_data_summary,
    "preview_audience": _run_preview,
    "create_draft_campaign": _run_create_draft,
    "draft_flow": _run_draft_flow,
}


def run_tool(user_id: uuid.UUID, conversation_id: uuid.UUID, call: ToolCall) -> dict[str, Any]:
    """Run one tool call for the merchant `user_id` (the owner of `conversation_id`); the result is
    JSON-ready. Bad arguments and domain refusals come back as `{"error", "details"?}`; database
    failures propagate (the reply then fails as a whole)."""
    runner = _RUNNERS.get(call.name)
    if runner is None:
        return {"error": "unknown tool"}
    if call.error:
        return {"error": f"The arguments could not be read: {call.error}"}
    try:
        return runner(user_id, conversation_id, call.arguments)
    except ValidationError as exc:
        return {"error": "The arguments are not valid.", "details": exc.messages}
    except HeraldError as exc:
        return {"error": exc.message, **({"details": exc.errors} if exc.errors else {})}


def _noted(result: dict[str, Any], ignored: list[str]) -> dict[str, Any]:
    return {**result, "ignoredArguments": ignored} if ignored else result


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat() + "Z"
