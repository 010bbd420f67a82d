"""Which provider sends which channel type, and the account whose limits that sending counts against."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app

from app.channels.base import ChannelSender, UnsupportedChannel
from app.config import MAX_IN_FLIGHT, Settings
from app.services import provider_accounts

# Messages one sender keeps in flight when its account does not say (`maxInFlight`). HTTP APIs
# take many concurrent requests; an SMTP relay counts connections (SMTP_MAX_CONNECTIONS).
DEFAULT_IN_FLIGHT = {"sms": 16, "whatsapp": 16, "push": 16}


@dataclass(frozen=True)
class SendAccount:
    """A provider account as the send engine uses it.

    key: what every sender of this account shares (rate limits, quotas, a provider's "slow
    down"): the platform's SMTP relay, or one merchant's Twilio / WhatsApp / VAPID account.
    in_flight: messages each sender keeps in flight at once. messages_per_second, per_hour,
    per_day: the account's own limits, if any.
    """

    key: str
    sender: ChannelSender
    in_flight: int
    messages_per_second: float | None = None
    per_hour: int | None = None
    per_day: int | None = None


def account_for(channel_type: str, user_id: uuid.UUID) -> SendAccount:
    """The provider for a merchant's messages of one channel type. Email goes through the platform's
    SMTP_URL; SMS, WhatsApp and push through the merchant's own provider account."""
    settings = current_app.config["HERALD_SETTINGS"]
    if channel_type == "email":
        from app.channels.email import EmailSender
        from app.channels.smtp import parse_smtp_url

        relay = parse_smtp_url(settings.smtp_url)
        return SendAccount(key=f"smtp:{relay.host}:{relay.port}",
                           sender=EmailSender(settings.smtp_url, settings.public_base_url, settings.mail_from),
                           in_flight=settings.smtp_max_connections,
                           messages_per_second=settings.smtp_messages_per_second,
                           per_hour=settings.smtp_messages_per_hour, per_day=settings.smtp_messages_per_day)
    found = provider_accounts.account_for_sending(user_id, channel_type)
    if found is None:
        raise UnsupportedChannel(f"No {channel_type} provider account is configured.")
    account_id, config = found
    return SendAccount(key=f"account:{account_id}", sender=_PROVIDERS[channel_type](config, settings),
                       in_flight=min(config.get("maxInFlight") or DEFAULT_IN_FLIGHT[channel_type], MAX_IN_FLIGHT),
                       messages_per_second=config.get("messagesPerSecond"),
                       per_hour=config.get("messagesPerHour"), per_day=config.get("messagesPerDay"))


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
