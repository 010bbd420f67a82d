"""The provider account a channel's messages go through, opened for sending: its sender (from the
catalogue) and the limits every sender of the account shares."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import current_app

from app.channels import catalogue
from app.channels.base import ChannelSender, UnsupportedChannel
from app.channels.smtp import parse_smtp_url
from app.config import MAX_IN_FLIGHT
from app.services import provider_accounts


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
    """The provider for a merchant's messages of one channel type, and the account it counts
    against: the platform's SMTP relay (SMTP_URL) for email; for the others, the merchant's own
    provider account."""
    settings = current_app.config["HERALD_SETTINGS"]
    channel = catalogue.spec(channel_type)
    sender_class = catalogue.sender_class(channel_type)
    if not channel.merchant_account:
        relay = parse_smtp_url(settings.smtp_url)
        return SendAccount(key=f"smtp:{relay.host}:{relay.port}",
                           sender=sender_class(settings.smtp_url, settings.public_base_url, settings.mail_from),
                           in_flight=settings.smtp_max_connections,
                           messages_per_second=settings.smtp_messages_per_second,
                           per_hour=settings.smtp_messages_per_hour, per_day=settings.smtp_messages_per_day)
    found = provider_accounts.account_for_sending(user_id, channel_type)
    if found is None:
        raise UnsupportedChannel(f"No {channel_type} provider account is configured.")
    account_id, config = found
    return SendAccount(key=f"account:{account_id}", sender=sender_class(config, settings),
                       in_flight=min(config.get("maxInFlight") or channel.in_flight, MAX_IN_FLIGHT),
                       messages_per_second=config.get("messagesPerSecond"),
                       per_hour=config.get("messagesPerHour"), per_day=config.get("messagesPerDay"))
