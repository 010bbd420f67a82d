"""Payload shapes the outside world sends to the ingest routes.

Only what Herald relies on is validated; every other provider field is kept as sent (`unknown =
INCLUDE`), because `eventData` stores the provider's payload.
"""
from __future__ import annotations

import time

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates

MAX_BATCH = 1000
# Meta refuses events older than 7 days; a little clock skew into the future is tolerated.
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
MAX_FUTURE_SKEW_SECONDS = 600
GA4_EVENT_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"


class CapiEventSchema(Schema):
    class Meta:
        unknown = INCLUDE

    event_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    event_time = fields.Integer(required=True, strict=True)
    event_id = fields.String(validate=validate.Length(min=1, max=200))
    action_source = fields.String(validate=validate.Length(max=50))
    user_data = fields.Dict(keys=fields.String())
    custom_data = fields.Dict(keys=fields.String())

    @validates("event_time")
    def _recent(self, value: int, **_: object) -> None:
        now = time.time()
        if value < now - MAX_EVENT_AGE_SECONDS:
            raise ValidationError("Must be a unix time in seconds within the last 7 days.")
        if value > now + MAX_FUTURE_SKEW_SECONDS:
            raise ValidationError("Must not be in the future.")


class CapiBatchSchema(Schema):
    """Conversions-API shape: {"data": [event, ...]} (a `test_event_code` etc. may ride along)."""

    class Meta:
        unknown = INCLUDE

    data = fields.List(fields.Nested(CapiEventSchema), required=True,
                       validate=validate.Length(min=1, max=MAX_BATCH))


class Ga4EventSchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(GA4_EVENT_NAME))
    params = fields.Dict(keys=fields.String(), load_default=dict)


class Ga4BatchSchema(Schema):
    """Measurement-Protocol shape: {"client_id", "user_id"?, "events": [{"name", "params"}]}."""

    class Meta:
        unknown = INCLUDE  # newer MP fields (consent, user_location, device...) are kept as sent

    client_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    user_id = fields.String(allow_none=True, validate=validate.Length(max=256))
    timestamp_micros = fields.Integer(strict=True, allow_none=True)
    user_properties = fields.Dict(keys=fields.String(), allow_none=True)
    user_data = fields.Dict(keys=fields.String(), allow_none=True)
    non_personalized_ads = fields.Boolean()
    events = fields.List(fields.Nested(Ga4EventSchema), required=True, validate=validate.Length(min=1, max=MAX_BATCH))


class AcceptedSchema(Schema):
    accepted = fields.Integer(metadata={"description": "Events in the request."})
    duplicates = fields.Integer(metadata={"description": "Events already stored before, dropped."})
