"""Per-type configuration of campaign channels: which fields exist, their rules, and which are templates.

A config is stored as loaded here (camelCase keys, optional fields left out rather than null). A field
is a template because it is declared with `_template()`; TEMPLATE_FIELDS is derived from those
declarations, so the send engine renders exactly the fields that were validated as templates.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.channels.catalogue import require_every_channel
from app.schemas.base import BoundedList, fields_marked, load_by_kind, no_nul
from app.services.ab_tests import METRICS
from app.services.rendering import template_error

EMAIL_MAX = 254
FROM_NAME_MAX = 100
SUBJECT_MAX = 998  # RFC 5322's line limit
# Far above any sane message, far below the request size limit: a bound, not a style rule.
EMAIL_BODY_MAX = 200_000
SMS_BODY_MAX = 1600  # ten concatenated segments
PUSH_TITLE_MAX = 100
PUSH_BODY_MAX = 500
URL_MAX = 2048
WHATSAPP_PARAMETER_MAX = 1024
WHATSAPP_PARAMETERS_MAX = 100
MESSAGES_PER_SECOND_MAX = 10_000
VARIANTS_MAX = 7
AB_TEST_MINUTES_MAX = 7 * 24 * 60
NOT_VARIED = ("messagesPerSecond", "abTest")  # fields of the channel, not of its message


def _single_line(value: str) -> None:
    # Header values: a line break would let a template or a pasted value inject headers.
    if "\r" in value or "\n" in value:
        raise ValidationError("Must be a single line.")


def _valid_template(value: str) -> None:
    try:
        error = template_error(value)
    except RecursionError:
        # Jinja's parser recurses per nesting level; a few hundred "(" must be a 422, not a 500.
        error = "Template is nested too deeply."
    if error is not None:
        raise ValidationError(error)


def _text(maximum: int, *checks: Any, **kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(min=1, max=maximum), no_nul, *checks], **kwargs)


def _template(maximum: int, *checks: Any, **kwargs: Any) -> fields.String:
    return _text(maximum, *checks, _valid_template, metadata={"template": True}, **kwargs)


def _email(**kwargs: Any) -> fields.Email:
    return fields.Email(validate=validate.Length(max=EMAIL_MAX), **kwargs)


def _https_url(**kwargs: Any) -> fields.Url:
    return fields.Url(schemes={"https"}, validate=[validate.Length(max=URL_MAX), no_nul], **kwargs)


class JsonNumber(fields.Float):
    """A JSON number; a string such as "5" is refused rather than coerced."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class AbTestSchema(Schema):
    """2–7 variants of the channel's message, each overriding some of its fields, tried on
    `testPercent` of the audience (split evenly); after `durationMinutes` the one with the best
    `metric` goes to everyone else (app.services.ab_tests)."""

    variants = BoundedList(fields.Dict(keys=fields.String()), required=True, min_length=2, max_length=VARIANTS_MAX)
    testPercent = JsonNumber(required=True, validate=validate.Range(min=0.01, max=100))
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    durationMinutes = fields.Integer(required=True, strict=True, validate=validate.Range(1, AB_TEST_MINUTES_MAX))


class _ChannelConfigSchema(Schema):
    messagesPerSecond = JsonNumber(
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MESSAGES_PER_SECOND_MAX),
        metadata={"description": "Send rate limit for this channel."},
    )
    abTest = fields.Nested(AbTestSchema, allow_none=True, metadata={"description": AbTestSchema.__doc__})


class EmailConfigSchema(_ChannelConfigSchema):
    fromEmail = _email(required=True)
    fromName = _text(FROM_NAME_MAX, _single_line, allow_none=True)
    subject = _template(SUBJECT_MAX, _single_line, required=True)
    html = _template(EMAIL_BODY_MAX, allow_none=True)
    text = _template(EMAIL_BODY_MAX, allow_none=True)
    replyTo = _email(allow_none=True)

    @validates_schema
    def _needs_a_body(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("html") and not data.get("text"):
            message = "An email needs an html or a text body (or both)."
            raise ValidationError({"html": [message], "text": [message]})


class SmsConfigSchema(_ChannelConfigSchema):
    body = _template(SMS_BODY_MAX, required=True)


class PushConfigSchema(_ChannelConfigSchema):
    title = _template(PUSH_TITLE_MAX, required=True)
    body = _template(PUSH_BODY_MAX, required=True)
    url = _https_url(allow_none=True, metadata={"description": "Opened when the notification is clicked."})
    icon = _https_url(allow_none=True)


class WhatsappConfigSchema(_ChannelConfigSchema):
    templateName = fields.String(
        required=True,
        validate=validate.Regexp(r"^[a-z0-9_]{1,512}$",
                                 error="Must be an approved template's name: lowercase letters, digits and _."),
    )
    language = fields.String(
        required=True,
        validate=validate.Regexp(r"^[a-z]{2,3}(_[A-Z]{2})?$", error="Must be a language code such as en or en_US."),
    )
    # The template's body variables {{1}}, {{2}}, ... in order; each is itself a template over the contact.
    parameters = BoundedList(
        _template(WHATSAPP_PARAMETER_MAX),
        load_default=list,
        max_length=WHATSAPP_PARAMETERS_MAX,
        metadata={"template": True},
    )


CONFIG_SCHEMAS: dict[str, type[Schema]] = {
    "email": EmailConfigSchema,
    "sms": SmsConfigSchema,
    "push": PushConfigSchema,
    "whatsapp": WhatsappConfigSchema,
}

require_every_channel(CONFIG_SCHEMAS, "CONFIG_SCHEMAS")
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = fields_marked(CONFIG_SCHEMAS, "template")


def load_channel_config(channel_type: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The channel's validated config (marshmallow.ValidationError keyed by field, unknown keys too).
    Each A/B variant must name fields of the message, and make a valid config over the rest."""
    loaded = load_by_kind(CONFIG_SCHEMAS, channel_type, raw)
    test = loaded.get("abTest")
    if test:
        base = {key: value for key, value in raw.items() if key not in NOT_VARIED}
        message_fields = set(CONFIG_SCHEMAS[channel_type]().fields) - set(NOT_VARIED)
        errors: dict[int, Any] = {}
        variants = []
        for index, variant in enumerate(test["variants"]):
            unknown = sorted(set(variant) - message_fields)
            if unknown:
                errors[index] = {name: ["Not a field of this channel's message."] for name in unknown}
                continue
            try:
                merged = load_by_kind(CONFIG_SCHEMAS, channel_type, {**base, **variant})
            except ValidationError as exc:
                errors[index] = exc.messages
                continue
            variants.append({name: merged[name] for name in variant if name in merged})
        if errors:
            raise ValidationError({"abTest": {"variants": errors}})
        loaded["abTest"] = {**test, "variants": variants}
    return loaded
