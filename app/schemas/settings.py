"""The merchant's sending settings: what the API takes (PATCH, every part optional) and shows."""
from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from app.channels.catalogue import CHANNEL_TYPES
from app.schemas.base import BoundedList, CamelSchema, UtcDateTime, iana_zone, no_nul

MAX_CAPS_PER_CHANNEL = 5
MAX_WINDOW_HOURS = 24 * 365
MAX_ATTRIBUTION_DAYS = 90
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _clock(value: str) -> None:
    if not _CLOCK.match(value):
        raise ValidationError("A time of day as HH:MM (24-hour).")


class QuietHoursSchema(CamelSchema):
    """No message on the channel from `start` to `end`, in the recipient's local time (it may
    span midnight: 21:00–08:00)."""

    start = fields.String(required=True, validate=_clock)
    end = fields.String(required=True, validate=_clock)

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["start"] == data["end"]:
            raise ValidationError("Quiet hours must not start and end at the same time.", "end")


class FrequencyCapSchema(CamelSchema):
    """At most `messages` marketing messages per contact in any window of `window_hours`."""

    messages = fields.Integer(required=True, strict=True, validate=validate.Range(1, 1000))
    window_hours = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_WINDOW_HOURS))


class UtmSchema(CamelSchema):
    """Tracked links get utm_source, utm_medium (the channel) and utm_campaign (the campaign's name)
    unless the link already has them."""

    enabled = fields.Boolean()
    source = fields.String(validate=[validate.Length(min=1, max=100), no_nul])


class AttributionSchema(CamelSchema):
    """An order within this many days after a click (or an open) is credited to that message."""

    click_window_days = fields.Integer(strict=True, validate=validate.Range(1, MAX_ATTRIBUTION_DAYS))
    open_window_days = fields.Integer(strict=True, validate=validate.Range(0, MAX_ATTRIBUTION_DAYS), metadata={
        "description": "0: opens are never credited."})


def _per_channel(values: fields.Field) -> fields.Dict:
    return fields.Dict(keys=fields.String(validate=validate.OneOf(CHANNEL_TYPES)), values=values)


class SettingsUpdateSchema(CamelSchema):
    """Every part optional. Per channel, a value replaces that channel's setting and null removes it;
    `utm` and `attribution` change the fields given."""

    timezone = fields.String(validate=[validate.Length(max=64), iana_zone], metadata={
        "description": "The merchant's default timezone, for contacts whose own is not known."})
    quiet_hours = _per_channel(fields.Nested(QuietHoursSchema, allow_none=True))
    frequency_caps = _per_channel(BoundedList(fields.Nested(FrequencyCapSchema), allow_none=True,
                                              max_length=MAX_CAPS_PER_CHANNEL))
    utm = fields.Nested(UtmSchema)
    attribution = fields.Nested(AttributionSchema)


class SettingsSchema(CamelSchema):
    """The settings in force: the merchant's own where set, else the defaults."""

    timezone = fields.String()
    quiet_hours = _per_channel(fields.Nested(QuietHoursSchema))
    frequency_caps = _per_channel(fields.List(fields.Nested(FrequencyCapSchema)))
    utm = fields.Nested(UtmSchema)
    attribution = fields.Nested(AttributionSchema)
    updated_at = UtcDateTime(allow_none=True, metadata={"description": "Null while every setting is a default."})
