"""Merchants' provider accounts inserted directly in the database, their secrets encrypted as the
provider-accounts API stores them."""
from __future__ import annotations

from typing import Any

from app.extensions import db
from app.models import ProviderAccount, User
from app.security.secret_box import encrypt_fields
from app.services.provider_accounts import ACCOUNT_REF_FIELDS, SECRET_FIELDS


def add_provider_account(user: User, channel_type: str, config: dict[str, Any]) -> ProviderAccount:
    """A committed account for `channel_type` (sms, whatsapp, push), found by callbacks through
    its account ref (Twilio's accountSid, WhatsApp's phoneNumberId)."""
    ref_field = ACCOUNT_REF_FIELDS.get(channel_type)
    account = ProviderAccount(user_id=user.id, channel_type=channel_type,
                              account_ref=config.get(ref_field) if ref_field else None,
                              config=encrypt_fields(config, SECRET_FIELDS[channel_type]))
    db.session.add(account)
    db.session.commit()
    return account
