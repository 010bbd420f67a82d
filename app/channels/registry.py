"""Which provider sends which channel type."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app

from app.channels.base import ChannelSender, UnsupportedChannel
from app.config import Settings
from app.services import provider_accounts


def sender_for(channel_type: str, user_id: uuid.UUID) -> ChannelSender:
    """The provider for a merchant's messages of one channel type. Email goes through the platform's
    SMTP_URL; SMS, WhatsApp and push through the merchant's own provider account."""
    settings = current_app.config["HERALD_SETTINGS"]
    if channel_type == "email":
        from app.channels.email import EmailSender

        return EmailSender(settings.smtp_url, settings.public_base_url, settings.mail_from)
    config = provider_accounts.decrypted_account_config(user_id, channel_type)
    if config is None:
        raise UnsupportedChannel(f"No {channel_type} provider account is configured.")
    return _PROVIDERS[channel_type](config, settings)


def _sms(config: dict[str, Any], settings: Settings) -> ChannelSender:
    from app.channels.sms import SmsSender

    return SmsSender(config, settings)


def _whatsapp(config: dict[str, Any], settings: Settings) -> ChannelSender:
    from app.channels.whatsapp import WhatsAppSender

    return WhatsAppSender(config, settings)


def _push(config: dict[str, Any], settings: Settings) -> ChannelSender:
    from app.channels.push import PushSender

    return PushSender(config, settings)


_PROVIDERS: dict[str, Callable[[dict[str, Any], Settings], ChannelSender]] = {
    "sms": _sms, "whatsapp": _whatsapp, "push": _push,
}
