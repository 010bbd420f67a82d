"""The API speaks camelCase (the seed's property names); Python speaks snake_case."""
from __future__ import annotations

from datetime import timezone

from marshmallow import Schema, fields


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    """Every field's wire name is the camelCase of its attribute name, unless it sets data_key."""

    def on_bind_field(self, field_name: str, field_obj) -> None:
        if field_obj.data_key is None:
            field_obj.data_key = camelcase(field_name)


class UtcDateTime(fields.DateTime):
    """Naive UTC in the database, explicit UTC on the wire; aware input is converted to naive UTC."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        return parsed
