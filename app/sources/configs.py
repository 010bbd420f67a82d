"""Per-type configuration of data sources: which fields exist, their rules, and which are secrets.

Secrets are encrypted at rest (app.security.secret_box) and never returned by the API. A field is a
secret because it is declared with `secret_field()`; SECRET_FIELDS is derived from those declarations and
is what everything else reads.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate

from app.schemas.base import fields_marked, load_by_kind, pattern_field, secret_field

# Pixel and GTM gateways authenticate with a per-source ingest key; Shopify signs its webhooks.
INGEST_KEY_TYPES = frozenset({"facebook_pixel", "gtm"})


class _LowercaseString(fields.String):
    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


ShopifyConfigSchema = Schema.from_dict(
    {
        "shopDomain": _LowercaseString(
            required=True,
            validate=[
                validate.Length(max=255),
                validate.Regexp(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$",
                                error="Must be the store's <name>.myshopify.com domain."),
            ],
        ),
        "accessToken": secret_field(),
        "webhookSecret": secret_field(),
        "apiVersion": pattern_field(r"^\d{4}-(01|04|07|10)$", "Must be a Shopify API version such as 2025-10.",
                               load_default="2025-10"),
        "backfillDays": fields.Integer(strict=True, load_default=90, validate=validate.Range(min=1, max=3650)),
    },
    name="ShopifyConfig",
)

FacebookPixelConfigSchema = Schema.from_dict(
    {
        "pixelId": pattern_field(r"^\d{5,32}$", "Must be 5 to 32 digits.", required=True),
        "accessToken": secret_field(),
        "apiVersion": pattern_field(r"^v\d+\.\d+$", "Must be a Graph API version such as v21.0.", load_default="v21.0"),
    },
    name="FacebookPixelConfig",
)

GtmConfigSchema = Schema.from_dict(
    {
        "accountId": pattern_field(r"^\d+$", "Must be digits only.", required=True),
        "containerId": pattern_field(r"^\d+$", "Must be digits only.", required=True),
        "accessToken": secret_field(),
        "measurementId": pattern_field(r"^G-[A-Z0-9]+$", "Must be a GA4 measurement id such as G-ABC123.",
                                  allow_none=True),
    },
    name="GtmConfig",
)

CONFIG_SCHEMAS: dict[str, type[Schema]] = {
    "shopify": ShopifyConfigSchema,
    "facebook_pixel": FacebookPixelConfigSchema,
    "gtm": GtmConfigSchema,
}

SECRET_FIELDS: dict[str, tuple[str, ...]] = fields_marked(CONFIG_SCHEMAS, "secret")


def load_config(source_type: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The source's validated config (marshmallow.ValidationError keyed by field)."""
    return load_by_kind(CONFIG_SCHEMAS, source_type, raw)
