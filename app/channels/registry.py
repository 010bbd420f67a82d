"""Which provider sends which channel type."""
from __future__ import annotations

from flask import current_app

from app.channels.base import ChannelSender, UnsupportedChannel


def sender_for(channel_type: str) -> ChannelSender:
    settings = current_app.config["HERALD_SETTINGS"]
    if channel_type == "email":
        from app.channels.email import EmailSender

        return EmailSender(settings.smtp_url, settings.public_base_url, settings.mail_from)
    raise UnsupportedChannel(f"No provider is configured for {channel_type} messages.")
