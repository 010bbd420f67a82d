"""Merchants' provider accounts (Twilio, WhatsApp Cloud API, Web Push VAPID keys): secrets are
encrypted at rest and only ever decrypted for a send or to verify a provider's callback."""
from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from app.extensions import db
from app.models import ProviderAccount
from app.security.secret_box import decrypt_fields

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "sms": ("authToken",),
    "whatsapp": ("accessToken",),
    "push": ("vapidPrivateKey",),
}
# The config field a provider's callbacks name the account by.
ACCOUNT_REF_FIELDS: dict[str, str] = {"sms": "accountSid", "whatsapp": "phoneNumberId"}


def decrypted_account_config(user_id: uuid.UUID, channel_type: str) -> dict[str, Any] | None:
    stored = db.session.scalar(
        sa.select(ProviderAccount.config).where(ProviderAccount.user_id == user_id,
                                                ProviderAccount.channel_type == channel_type)
    )
    return None if stored is None else decrypt_fields(stored, SECRET_FIELDS[channel_type])


def account_by_ref(channel_type: str, account_ref: str) -> tuple[uuid.UUID, dict[str, Any]] | None:
    """(merchant, decrypted config) of the account a callback names, if any."""
    row = db.session.execute(
        sa.select(ProviderAccount.user_id, ProviderAccount.config)
        .where(ProviderAccount.channel_type == channel_type, ProviderAccount.account_ref == account_ref)
        .limit(1)
    ).first()
    return None if row is None else (row.user_id, decrypt_fields(row.config, SECRET_FIELDS[channel_type]))
