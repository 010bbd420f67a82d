"""Payload shapes the outside world sends to the ingest routes.

Only what Herald relies on is validated; every other provider field is kept as sent (`unknown =
INCLUDE`), because `eventData` stores the provider's payload.
"""
from __future__ import annotations

import time
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates

from app.schemas.base import BoundedList

MAX_BATCH = 1000
# Meta refuses events older than 7 days; a little clock skew into the future is tolerated.
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
MAX_FUTURE_SKEW_SECONDS = 600
GA4_EVENT_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"


def capi_event_errors(event: dict[str, Any], now: float) -> dict[str, list[str]]:
    """What is wrong with one CAPI event (empty: nothing). A plain loop rather than a nested schema:
    batches carry up to 1,000 events and this runs for every one of them on the ingest hot path."""
    errors: dict[str, list[str]] = {}
    name = event.get("event_name")
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        errors["event_name"] = ["Required: a string of 1 to 100 characters."]
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        errors["event_time"] = ["Required: unix time in seconds (an integer)."]
    elif not now - MAX_EVENT_AGE_SECONDS <= event_time <= now + MAX_FUTURE_SKEW_SECONDS:
        errors["event_time"] = ["Must be within the last 7 days and not in the future."]
    event_id = event.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        errors["event_id"] = ["Must be a string of 1 to 200 characters."]
    for key in ("user_data", "custom_data"):
        if key in event and not isinstance(event[key], dict):
            errors[key] = ["Must be an object."]
    return errors


class CapiBatchSchema(Schema):
    """Conversions-API shape: {"data": [event, ...]} (a `test_event_code` etc. may ride along).
    Events keep every field as sent; `capi_event_errors` says what an event must have."""

    class Meta:
        unknown = INCLUDE

    data = BoundedList(fields.Dict(), required=True, min_length=1, max_length=MAX_BATCH)

    @validates("data")
    def _events(self, events: list[dict[str, Any]], **_: object) -> None:
        now = time.time()
        errors = {index: problems for index, event in enumerate(events) if (problems := capi_event_errors(event, now))}
        if errors:
            raise ValidationError(errors)


class Ga4EventSchema(Schema):
    name = fields.String(required=True, validate=validate.Regexp(GA4_EVENT_NAME))
    params = fields.Dict(load_default=dict)


class Ga4BatchSchema(Schema):
    """Measurement-Protocol shape: {"client_id", "user_id"?, "events": [{"name", "params"}]}."""

    class Meta:
        unknown = INCLUDE  # newer MP fields (consent, user_location, device...) are kept as sent

    client_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    user_id = fields.String(allow_none=True, validate=validate.Length(max=256))
    timestamp_micros = fields.Integer(strict=True, allow_none=True)
    user_properties = fields.Dict(allow_none=True)
    user_data = fields.Dict(allow_none=True)
    non_personalized_ads = fields.Boolean()
    events = BoundedList(fields.Nested(Ga4EventSchema), required=True, min_length=1, max_length=MAX_BATCH)


class AcceptedSchema(Schema):
    accepted = fields.Integer(metadata={"description": "Events in the request."})
    duplicates = fields.Integer(metadata={"description": "Events already stored before, dropped."})
