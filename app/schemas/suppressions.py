"""The suppression list's API shapes."""
from __future__ import annotations

from marshmallow import fields, validate

from app.models.suppressions import ADDRESS_KINDS, SUPPRESSION_REASONS
from app.schemas.base import CamelSchema, UtcDateTime, no_nul

# What a merchant may give as a reason (`erased` is Herald's own, for the forgotten).
GIVEN_REASONS = ("bounced", "complained", "unsubscribed", "manual")


class SuppressionSchema(CamelSchema):
    id = fields.UUID()
    kind = fields.String(metadata={"description": "email or phone."})
    address = fields.String(allow_none=True, metadata={
        "description": "The normalized address; null once the person was erased (only the hash is kept)."})
    address_sha256 = fields.String(attribute="address_hash", metadata={
        "description": "SHA-256 (hex) of the normalized address: what every check compares."})
    reason = fields.String(metadata={"description": ", ".join(SUPPRESSION_REASONS) + "."})
    created_at = UtcDateTime()


class SuppressionCreateSchema(CamelSchema):
    kind = fields.String(required=True, validate=validate.OneOf(ADDRESS_KINDS))
    address = fields.String(required=True, validate=[validate.Length(min=1, max=320), no_nul], metadata={
        "description": "An email address, or a phone number in international form (+...)."})
    reason = fields.String(load_default="manual", validate=validate.OneOf(GIVEN_REASONS))


class SuppressionQuerySchema(CamelSchema):
    kind = fields.String(validate=validate.OneOf(ADDRESS_KINDS))


class SuppressionImportResultSchema(CamelSchema):
    added = fields.Integer()
    already = fields.Integer(metadata={"description": "Addresses that were on the list already (kept as they were)."})
