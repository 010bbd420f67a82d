"""Schemas for merchants' provider accounts (SMS, WhatsApp, push)."""
from __future__ import annotations

from marshmallow import fields

from app.schemas.base import CamelSchema, UtcDateTime

CONFIG_DOC = {
    "description": "Per channelType. sms (Twilio): accountSid, authToken*, and exactly one of fromNumber "
    "(E.164) or messagingServiceSid; whatsapp (Cloud API): phoneNumberId, accessToken*, apiVersion "
    "(default v21.0), businessAccountId; push (VAPID): subject (mailto: or https: URL), vapidPublicKey "
    "and vapidPrivateKey* (a P-256 pair, base64url; the public key is derived when left out, and a fresh "
    "pair is generated when both are left out and none is stored); the public key is shown in clear for "
    "browsers to subscribe with. * secret: encrypted at rest and always shown as "
    "\"********\"; on replace, a secret left out or sent as \"********\" keeps its stored value."
}


class ProviderAccountPutSchema(CamelSchema):
    config = fields.Dict(keys=fields.String(), required=True, metadata=CONFIG_DOC)


class ProviderAccountSchema(CamelSchema):
    channel_type = fields.String(metadata={"description": "sms, whatsapp or push."})
    config = fields.Dict(metadata={"description": "Secrets are always shown as \"********\"."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
