"""The error body every failure answers with (app.errors.error_body), as the OpenAPI document shows it."""
from __future__ import annotations

from marshmallow import fields

from app.schemas.base import CamelSchema


class ErrorSchema(CamelSchema):
    status = fields.Integer(required=True, metadata={"description": "The HTTP status, repeated."})
    code = fields.String(required=True, metadata={
        "description": "What went wrong, for programs: e.g. not_found, validation_failed, too_many_requests."})
    message = fields.String(required=True, metadata={"description": "What went wrong, for people."})
    errors = fields.Raw(metadata={
        "description": "Where input was invalid: messages keyed by field, nested as the input is (or a list of "
                       "messages). Only on errors about input; at most 20 messages.",
        "anyOf": [{"type": "object", "additionalProperties": True}, {"type": "array", "items": {"type": "string"}}]})
    omitted_errors = fields.Integer(metadata={"description": "Messages left out of `errors` past the first 20."})
