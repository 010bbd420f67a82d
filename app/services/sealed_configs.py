"""Configs with credentials: validated by their per-kind schema, secrets encrypted before storage."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import ValidationError

from app.errors import ValidationFailed
from app.security.secret_box import encrypt_fields


def sealed_config(load: Callable[[str, Mapping[str, Any]], dict[str, Any]], kind: str, config: Mapping[str, Any],
                  secret_fields: tuple[str, ...], what: str) -> dict[str, Any]:
    """`config` validated by `load(kind, config)` (422 with the errors under `config`), its secrets
    encrypted for storage."""
    try:
        valid = load(kind, config)
    except ValidationError as exc:
        raise ValidationFailed(f"The config is not valid for a {kind} {what}.", errors={"config": exc.messages}) from exc
    return encrypt_fields(valid, secret_fields)
