"""Verified senders' API shapes."""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, missing, validate, validates_schema

from app.channels.configs import EMAIL_MAX
from app.models.senders import SENDER_KINDS, SENDER_STATUSES
from app.schemas.base import CamelSchema, UtcDateTime, no_nul
from app.services import senders


class SenderCreateSchema(CamelSchema):
    email = fields.Email(validate=validate.Length(max=EMAIL_MAX), metadata={
        "description": "An address to send from: a confirmation link is mailed to it."})
    domain = fields.String(validate=[validate.Length(min=1, max=253), no_nul], metadata={
        "description": "A domain to send from (any address at it): the answer lists the DNS records to publish."})

    @validates_schema
    def _one_of_them(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("email" in data) == ("domain" in data):
            message = "Give either an email address or a domain."
            raise ValidationError({"email": [message], "domain": [message]})


class DnsRecordSchema(CamelSchema):
    purpose = fields.String(metadata={"description": "spf, dkim or dmarc."})
    type = fields.String(metadata={"description": "TXT."})
    name = fields.String(metadata={"description": "Where to publish it."})
    value = fields.String(metadata={"description": "What to publish (long values: your DNS host splits them into "
                                                   "strings of 255 characters, which count as one)."})
    status = fields.String(metadata={"description": "ok, missing or wrong as the last check found it; unchecked."})
    found = fields.List(fields.String(), metadata={"description": "What the last check found at the name."})
    problem = fields.String(allow_none=True)
    suggested = fields.String(allow_none=True, metadata={
        "description": "A corrected record made from what is there (SPF: the include added to your record)."})


class _DnsRecords(fields.List):
    """A domain's records, read from the service (they depend on the settings), typed for OpenAPI."""

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = missing) -> Any:
        return senders.dns_records(obj)


class SenderSchema(CamelSchema):
    id = fields.UUID()
    kind = fields.String(metadata={"description": " or ".join(SENDER_KINDS) + "."})
    email = fields.String(allow_none=True)
    domain = fields.String(allow_none=True)
    status = fields.String(metadata={"description": " or ".join(SENDER_STATUSES) + "."})
    verified_at = UtcDateTime(allow_none=True)
    confirmation_sent_at = UtcDateTime(allow_none=True, metadata={
        "description": "An address: when its confirmation link was mailed (null until a worker has)."})
    dns_records = _DnsRecords(fields.Nested(DnsRecordSchema), metadata={
        "description": "A domain: the TXT records to publish, with the last check's findings."})
    checked_at = UtcDateTime(allow_none=True, metadata={"description": "A domain: its last DNS check."})
    created_at = UtcDateTime()
