"""Per-type configuration of data sources: which fields exist, their rules, and which are secrets.

Secrets are encrypted at rest (app.security.secret_box) and never returned by the API. A field is a
secret because it is declared with `secret_field()`; SECRET_FIELDS is derived from those declarations and
is what everything else reads.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.schemas.base import fields_marked, load_by_kind, pattern_field, secret_field
from app.security import secret_box

# Pixel and GTM gateways authenticate with a per-source ingest key; Shopify signs its webhooks.
INGEST_KEY_TYPES = frozenset({"facebook_pixel", "gtm"})
# The credential that lets Herald call a source's API (connection checks, pulls, Shopify webhook
# registration). Pixel and GTM sources may leave it out: they then only receive events.
API_TOKEN = "accessToken"


class _LowercaseString(fields.String):
    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


class _UppercaseString(fields.String):
    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip().upper()


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
        "accessToken": secret_field(required=False),
        "apiVersion": pattern_field(r"^v\d+\.\d+$", "Must be a Graph API version such as v21.0.", load_default="v21.0"),
    },
    name="FacebookPixelConfig",
)


class GtmConfigSchema(Schema):
    """`containerId` is the id merchants see in Tag Manager (GTM-XXXXXXX). The Tag Manager API
    addresses a container by two numeric ids instead; they are needed only with an access token."""

    containerId = _UppercaseString(required=True, validate=[
        validate.Length(max=32),
        validate.Regexp(r"^GTM-[A-Z0-9]{4,12}$", error="Must be the container id shown in Tag Manager, e.g. GTM-ABC1234."),
    ])
    accountId = pattern_field(r"^\d{1,20}$", "Must be the numeric Tag Manager account id.")
    apiContainerId = pattern_field(r"^\d{1,20}$", "Must be the numeric container id the Tag Manager API uses.")
    accessToken = secret_field(required=False)
    measurementId = pattern_field(r"^G-[A-Z0-9]+$", "Must be a GA4 measurement id such as G-ABC123.", allow_none=True)

    @validates_schema
    def _api_ids_with_token(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data.get("accessToken"):
            return
        missing = {name: ["Required with an accessToken: the Tag Manager API addresses containers by it."]
                   for name in ("accountId", "apiContainerId") if not data.get(name)}
        if missing:
            raise ValidationError(missing)


CONFIG_SCHEMAS: dict[str, type[Schema]] = {
    "shopify": ShopifyConfigSchema,
    "facebook_pixel": FacebookPixelConfigSchema,
    "gtm": GtmConfigSchema,
}

SECRET_FIELDS: dict[str, tuple[str, ...]] = fields_marked(CONFIG_SCHEMAS, "secret")


def decrypt_config(source_type: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config with its secrets in plain text (ValueError when they cannot be decrypted)."""
    return secret_box.decrypt_fields(stored, SECRET_FIELDS[source_type])


def calls_api(config: Mapping[str, Any]) -> bool:
    """Whether the source has the credentials to check its connection and pull (stored or plain)."""
    return bool(config.get(API_TOKEN))


def load_config(source_type: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The source's validated config (marshmallow.ValidationError keyed by field)."""
    return load_by_kind(CONFIG_SCHEMAS, source_type, raw)
