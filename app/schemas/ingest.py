"""Payload shapes the outside world sends to the ingest routes.

Only what Herald relies on is validated; every other provider field is kept as sent (`unknown =
INCLUDE`), because `eventData` stores the provider's payload and a sender never retries a 4xx: a
refused request is lost data. What cannot be used at all (no events, an event without a name, a
timestamp that is not one) is refused with the path of the bad field.

- Meta Conversions API: `{"data": [event, ...]}` as JSON, or a form (url-encoded or multipart, as
  the `facebook-business` SDK and Meta's curl examples send it) whose `data` field is a JSON array;
  in either, an event may be a JSON-encoded string (the SDK encodes each one).
- GA4: a Measurement-Protocol batch `{"client_id" | "app_instance_id", "events": [...]}`, or the event
  data of a server-side GTM container (`{"event_name", ...}`, one object or a list of them).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import (
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from app.errors import ValidationFailed
from app.schemas import json_input
from app.schemas.base import BoundedList

MAX_BATCH = 1000
# Meta refuses events older than 7 days; a little clock skew into the future is tolerated.
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
MAX_FUTURE_SKEW_SECONDS = 600
GA4_EVENT_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,39}$"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# Graph API credentials a CAPI client may put in the body: read for authentication, never kept.
CAPI_CREDENTIALS = ("access_token", "appsecret_proof")
# GA4 takes the stream in the query string (`measurement_id` for web, `firebase_app_id` for apps).
GA4_STREAM_PARAMS = ("measurement_id", "firebase_app_id")
# 2000-01-01 in microseconds: anything earlier is seconds or milliseconds sent by mistake.
_EARLIEST_MICROS = 946_684_800 * 1_000_000


def parse_json(raw: bytes) -> Any:
    # Text PostgreSQL cannot store does not fail the batch: the event holding it is quarantined.
    try:
        return json_input.parse(raw, lenient_text=True)
    except json_input.JsonRejected as exc:
        raise ValidationFailed(f"The body is not valid JSON: {exc.message}") from None


def read_capi_json(raw: bytes) -> dict[str, Any]:
    """A CAPI request sent as JSON (a form is taken as its fields: `data` is then JSON text)."""
    payload = parse_json(raw)
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object with a `data` array of events.")
    return payload


# --- Meta Conversions API -----------------------------------------------------------------------

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


def _decoded_json(text: str) -> Any:
    try:
        return json_input.parse(text.encode("utf-8", "surrogatepass"), lenient_text=True)
    except json_input.JsonRejected as exc:
        raise ValidationError(f"Not valid JSON: {exc.message}") from None


def _decoded_events(data: Any) -> Any:
    """`data` with a form's JSON text decoded, and each JSON-encoded event (the SDK's way) decoded."""
    if isinstance(data, str):
        try:
            data = _decoded_json(data)
        except ValidationError as exc:
            raise ValidationError({"data": exc.messages}) from None
    if not isinstance(data, list) or len(data) > MAX_BATCH:
        return data  # the field reports it
    decoded, errors = [], {}
    for index, event in enumerate(data):
        if isinstance(event, str):
            try:
                event = _decoded_json(event)
            except ValidationError as exc:
                errors[index] = exc.messages
        if not isinstance(event, dict) and index not in errors:
            errors[index] = ["Must be an event object, or a JSON string of one."]
        decoded.append(event)
    if errors:
        raise ValidationError({"data": errors})
    return decoded


class CapiBatchSchema(Schema):
    """Conversions-API shape: {"data": [event, ...]} (`test_event_code`, `partner_agent` etc. may ride
    along). Events keep every field as sent; `capi_event_errors` says what an event must have."""

    class Meta:
        unknown = INCLUDE

    data = BoundedList(fields.Dict(), required=True, min_length=1, max_length=MAX_BATCH)

    @pre_load
    def _decode(self, body: dict[str, Any], **_: object) -> dict[str, Any]:
        body = {key: value for key, value in body.items() if key not in CAPI_CREDENTIALS}
        if "data" in body:
            body["data"] = _decoded_events(body["data"])
        return body

    @validates("data")
    def _events(self, events: list[dict[str, Any]], **_: object) -> None:
        now = time.time()
        errors = {index: problems for index, event in enumerate(events) if (problems := capi_event_errors(event, now))}
        if errors:
            raise ValidationError(errors)


class CapiAcceptedSchema(Schema):
    """Herald's counts, and the fields of Meta's own answer that CAPI clients (the SDKs) read."""

    accepted = fields.Integer(metadata={"description": "Events in the request."})
    duplicates = fields.Integer(metadata={"description": "Events already stored before, dropped."})
    events_received = fields.Integer(metadata={"description": "As Meta answers it: events in the request."})
    messages = fields.List(fields.String(), metadata={"description": "As Meta answers it: always empty."})
    fbtrace_id = fields.String(metadata={"description": "As Meta answers it: this request's `X-Request-ID`."})


# --- GA4: Measurement Protocol and server-side GTM ---------------------------------------------

class DeviceId(fields.Field):
    """A GA4 id (client_id, app_instance_id, user_id): a string, or a number some senders send, kept
    as text."""

    def __init__(self, *, maximum: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not 0 < len(value) <= self.maximum:
            raise ValidationError(f"Must be a string of 1 to {self.maximum} characters.")
        return value


class TimestampMicros(fields.Field):
    """Unix time in microseconds (a number, or digits in a string), not in the future."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        number: int | float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None:
            raise ValidationError("Must be unix time in microseconds (a number).")
        if number < _EARLIEST_MICROS:
            raise ValidationError("Must be unix time in microseconds; this looks like seconds or milliseconds.")
        if number > (time.time() + MAX_FUTURE_SKEW_SECONDS) * 1_000_000:
            raise ValidationError("Must not be in the future.")
        return int(number)


def _object(**kwargs: Any) -> fields.Dict:
    return fields.Dict(allow_none=True, error_messages={"invalid": "Must be an object."}, **kwargs)


class Ga4EventSchema(Schema):
    class Meta:
        unknown = INCLUDE  # any other event field is kept as sent

    name = fields.String(required=True, validate=validate.Regexp(GA4_EVENT_NAME))
    params = _object(load_default=dict)
    timestamp_micros = TimestampMicros(allow_none=True)  # the event's own time, over the request's


class Ga4BatchSchema(Schema):
    """Measurement-Protocol shape: {"client_id" | "app_instance_id", "user_id"?, "events": [{"name", "params"}]}."""

    class Meta:
        unknown = INCLUDE  # newer MP fields (consent, user_location, device, ip_override...) are kept as sent

    client_id = DeviceId(maximum=200)  # web streams
    app_instance_id = DeviceId(maximum=200)  # app streams
    measurement_id = fields.String(validate=validate.Length(min=1, max=100))
    firebase_app_id = fields.String(validate=validate.Length(min=1, max=200))
    user_id = DeviceId(maximum=256, allow_none=True)
    timestamp_micros = TimestampMicros(allow_none=True)
    user_properties = _object()
    user_data = _object()
    non_personalized_ads = fields.Boolean(allow_none=True)
    events = BoundedList(fields.Nested(Ga4EventSchema), required=True, min_length=1, max_length=MAX_BATCH)

    @validates_schema
    def _one_device(self, data: dict[str, Any], **_: object) -> None:
        if not data.get("client_id") and not data.get("app_instance_id"):
            raise ValidationError("Required: client_id (web streams) or app_instance_id (app streams).", "client_id")


class EventDataSchema(Schema):
    """One event as a server-side GTM container holds it (its "common event data"): `event_name`,
    the event's parameters beside it, `client_id`, `user_id`, `user_data.email_address`...,
    `ip_override`, `user_agent`, and the GA4 client's `x-ga-*` keys."""

    class Meta:
        unknown = INCLUDE

    event_name = fields.String(required=True, validate=[validate.Length(min=1, max=100),
                                                         validate.Regexp(r"\S", error="Must not be blank.")])
    client_id = DeviceId(maximum=200, allow_none=True)
    user_id = DeviceId(maximum=256, allow_none=True)
    user_data = _object()
    timestamp_micros = TimestampMicros(allow_none=True)
    user_properties = _object(data_key="x-ga-mp2-user_properties", attribute="x-ga-mp2-user_properties")


@dataclass(frozen=True)
class GtmRequest:
    """What a GTM source was sent: a Measurement-Protocol batch, or server-side GTM event data."""

    batch: dict[str, Any] | None = None
    event_data: list[dict[str, Any]] = field(default_factory=list)


def load_gtm_request(payload: Any, query: Mapping[str, str]) -> GtmRequest:
    """A GA4 request body by its shape: an object with `events` is an MP batch (its stream ids may come
    in the query string, as MP sends them); an object with `event_name`, or a list of them, is event data."""
    if isinstance(payload, list) or (isinstance(payload, dict) and "events" not in payload and "event_name" in payload):
        events = payload if isinstance(payload, list) else [payload]
        if not events:
            raise ValidationFailed("No events: send at least one.", errors={"events": ["Must hold at least 1 item."]})
        if len(events) > MAX_BATCH:
            raise ValidationFailed(f"At most {MAX_BATCH} events per request.",
                                   errors={"events": [f"Must hold at most {MAX_BATCH} items."]})
        if not all(isinstance(event, dict) for event in events):
            raise ValidationFailed("Each event must be a JSON object with an `event_name`.")
        if isinstance(payload, dict):  # errors name the fields, not a position
            return GtmRequest(event_data=[EventDataSchema().load(payload)])
        return GtmRequest(event_data=EventDataSchema(many=True).load(events))
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object: a Measurement-Protocol batch or GTM event data.")
    stream = {key: query[key] for key in GA4_STREAM_PARAMS if query.get(key) and key not in payload}
    return GtmRequest(batch=Ga4BatchSchema().load({**stream, **payload}))


class IngestErrorSchema(Schema):
    status = fields.Integer()
    code = fields.String()
    message = fields.String()
    errors = fields.Raw(metadata={"description": "Where the input was invalid, by field path (data.3.event_time)."})


class GraphErrorDetailSchema(Schema):
    message = fields.String()
    type = fields.String()
    code = fields.Integer(metadata={"description": "190 bad key, 200 inactive source, 4 throttled, 2 retry, 100 the rest."})
    fbtrace_id = fields.String()


class GraphErrorSchema(IngestErrorSchema):
    """A CAPI error: Herald's fields, and the same as Graph API's `error` object (Meta's SDKs raise it)."""

    error = fields.Nested(GraphErrorDetailSchema)


class AcceptedSchema(Schema):
    accepted = fields.Integer(metadata={"description": "Events in the request."})
    duplicates = fields.Integer(metadata={"description": "Events already stored before, dropped."})
