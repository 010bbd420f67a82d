"""Schemas for campaign audiences and audience previews.

A definition is only checked here for being a JSON object; its rules live with the compiler
(`app.services.audience_sql.validate_definition`), which reports each problem by JSON path.
"""
from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from app.schemas.base import CamelSchema, UtcDateTime, name_field
from app.services.audiences import DEFAULT_SAMPLE_SIZE, MAX_SAMPLE_SIZE

NAME_MAX = 200
DEFINITION_DOC = {
    "description": (
        '{"match": "all" | "any", "conditions": [...]}; an empty list means every contact. Conditions: '
        '{"type": "event", "event": <normalized type>, "name": <original name, custom events only>, '
        '"withinDays": 1..3650 | "withinHours": 1..87600 (one or the other), "minCount": n, "negate": bool, '
        '"where": {"property": value | {"gte": n, ...}}}; '
        '{"type": "attribute", "field": "email" | "phone" | "firstName" | "lastName" | <attribute> | '
        '"attributes.<attribute>", "op": "eq" | "neq" | "in" | "contains" | "gt" | "gte" | "lt" | "lte" | '
        '"exists", "value": ...}; {"type": "consent", "channel": "email" | "sms" | "push" | "whatsapp", '
        '"status": "subscribed" (default) | "unsubscribed" | "bounced" | "complained"}; '
        '{"type": "group", "match": ..., "conditions": [...]} (at most 5 deep, 50 conditions in all). '
        "Text compares case-insensitively; gt/gte/lt/lte compare numbers (and numeric text) only; "
        "neq also matches a missing value; subscribed also needs an address on the channel."
    )
}


def _name_field(**kwargs: Any) -> fields.String:
    return name_field(NAME_MAX, **kwargs)


def _definition_field(**kwargs) -> fields.Dict:
    return fields.Dict(keys=fields.String(), metadata=DEFINITION_DOC, **kwargs)


class AudienceSchema(CamelSchema):
    id = fields.UUID()
    campaign_id = fields.UUID()
    name = fields.String()
    definition = fields.Dict()
    last_size = fields.Integer(allow_none=True, metadata={
        "description": "Matching contacts when last computed; null while a worker counts a large audience."})
    last_computed_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class AudienceCreateSchema(CamelSchema):
    name = _name_field(required=True)
    definition = _definition_field(required=True)


class AudienceUpdateSchema(CamelSchema):
    name = _name_field()
    definition = _definition_field()


class AudiencePreviewRequestSchema(CamelSchema):
    definition = _definition_field(required=True)
    sample_size = fields.Integer(load_default=DEFAULT_SAMPLE_SIZE, validate=validate.Range(0, MAX_SAMPLE_SIZE))


class SampleContactSchema(CamelSchema):
    id = fields.UUID()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    first_name = fields.String(allow_none=True)
    last_name = fields.String(allow_none=True)


class AudiencePreviewSchema(CamelSchema):
    count = fields.Integer(allow_none=True, metadata={
        "description": "Matching contacts; an estimate when `estimated` (null if not even that could be had in time)."})
    estimated = fields.Boolean(metadata={
        "description": "The count is estimated from a slice of the contacts: the exact count took too long. "
                       "An audience saved with this definition gets its exact size from a worker (`lastSize`)."})
    sample = fields.List(fields.Nested(SampleContactSchema), metadata={"description": "Newest contacts first."})
