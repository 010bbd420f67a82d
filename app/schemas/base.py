"""The API speaks camelCase (the seed's property names); Python speaks snake_case."""
from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from marshmallow import Schema, ValidationError, fields, validate

from app.security.secret_box import ENCRYPTED_PREFIX, REDACTED


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
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed


def no_nul(value: str) -> None:
    # PostgreSQL text and JSONB cannot hold U+0000; refuse it here instead of failing in the driver.
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")


def postgres_json(value: Any) -> None:
    """Any JSON, but PostgreSQL's: no NaN/Infinity and no NUL, at any depth."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError("Numbers must be finite.")
        elif isinstance(item, str) and "\x00" in item:
            raise ValidationError("Must not contain NUL characters.")


class BoundedList(fields.List):
    """A list whose length is checked before any element is: a body of 500,000 elements costs one
    comparison and one error, not 500,000 validations and their report."""

    def __init__(self, cls_or_instance: Any, *, min_length: int = 0, max_length: int, **kwargs: Any) -> None:
        kwargs["metadata"] = {"minItems": min_length, "maxItems": max_length, **kwargs.get("metadata", {})}
        super().__init__(cls_or_instance, **kwargs)
        self.min_length, self.max_length = min_length, max_length

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and not self.min_length <= len(value) <= self.max_length:
            raise ValidationError(f"Must hold between {self.min_length} and {self.max_length} items."
                                  if self.min_length else f"Must hold at most {self.max_length} items.")
        return super()._deserialize(value, attr, data, **kwargs)


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def iana_zone(value: str) -> None:
    # ZoneInfo alone would also take a path to any tzfile; only the names IANA publishes are zones here.
    if value not in _iana_zones():
        raise ValidationError("Not an IANA timezone (e.g. Europe/Paris).")


# Some character that is not whitespace. Spelled out so that it means the same in Python and in
# the ECMAScript regexes of JSON Schema, whose whitespace classes differ by these few characters.
NOT_BLANK = validate.Regexp(r"[\s\x1c-\x1f\x85\ufeff]*[^\s\x1c-\x1f\x85\ufeff]", error="Must not be blank.")


def name_field(maximum: int, **kwargs: Any) -> fields.String:
    """A required display name: 1..maximum characters, not blank."""
    return fields.String(
        validate=[validate.Length(min=1, max=maximum), NOT_BLANK, no_nul],
        **kwargs,
    )


def fields_marked(schemas: Mapping[str, type[Schema]], flag: str) -> dict[str, tuple[str, ...]]:
    """Per kind, the names of the fields whose metadata sets `flag` (e.g. which are secrets)."""
    return {
        kind: tuple(name for name, field in schema().fields.items() if field.metadata.get(flag))
        for kind, schema in schemas.items()
    }


def load_by_kind(schemas: Mapping[str, type[Schema]], kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `raw` with the schema for `kind`: defaults filled in, optional fields set to null
    dropped. Raises marshmallow.ValidationError keyed by field."""
    loaded = schemas[kind]().load(raw)
    return {name: value for name, value in loaded.items() if value is not None}


SECRET_MAX = 4096


def _not_ciphertext(value: str) -> None:
    # A value already in our encrypted form would be stored as is and never decrypt.
    if value.startswith(ENCRYPTED_PREFIX):
        raise ValidationError("Must be the secret itself.")


def secret_field(*checks: Any, required: bool = True) -> fields.String:
    """A credential: encrypted at rest and never shown (metadata `secret`), so the redaction mask
    the API shows in its place is refused as a value."""
    return fields.String(
        required=required,
        metadata={"secret": True},
        validate=[
            validate.Length(min=1, max=SECRET_MAX),
            validate.NoneOf([REDACTED], error="Send the secret itself, not the redaction mask."),
            _not_ciphertext,
            *checks,
        ],
    )


def pattern_field(regex: str, error: str, max_length: int = 64, **kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(max=max_length), validate.Regexp(regex, error=error)], **kwargs)
