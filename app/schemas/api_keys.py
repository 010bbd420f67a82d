"""Schemas for API keys."""
from __future__ import annotations

from marshmallow import fields, validate

from app.schemas.base import BoundedList, CamelSchema, UtcDateTime, name_field
from app.security.api_keys import SCOPES

NAME_MAX = 100
SCOPES_DOC = "; ".join(f"`{name}`: {meaning}" for name, meaning in SCOPES.items())


class ApiKeyCreateSchema(CamelSchema):
    name = name_field(NAME_MAX, required=True, metadata={"description": "What the key is for, to recognise it."})
    scopes = BoundedList(fields.String(validate=validate.OneOf(tuple(SCOPES))), min_length=1, max_length=len(SCOPES),
                         required=True, metadata={"description": SCOPES_DOC})


class ApiKeySchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The key's first characters (not secret), to tell keys apart."})
    scopes = fields.List(fields.String())
    created_at = UtcDateTime()
    last_used_at = UtcDateTime(allow_none=True, metadata={"description": "Accurate to a minute; null if never used."})


class CreatedApiKeySchema(ApiKeySchema):
    key = fields.String(metadata={"description": "The key, shown only in this answer: send it as "
                                                 "`Authorization: Bearer <key>`."})
