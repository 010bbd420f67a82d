"""Every channel Herald sends through, in one place.

Each entry says what a contact needs to be reached on the channel (an address kind), which
provider module sends it, whether merchants bring their own provider account (and which of its
config fields a provider's callbacks name it by), and how many messages a sender keeps in flight
by default. Every list of channel types, provider-account channels and reachable channels is derived
from CHANNELS; an unknown channel raises, never defaults. Adding a channel: see the README's
checklist ("Adding a channel").

Deliberately free of imports from the rest of Herald, so models, schemas and services can all read it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Any

# What a contact must have to be reached: an email address, a phone number, a browser push subscription.
ADDRESS_KINDS = ("email", "phone", "push")


@dataclass(frozen=True)
class ChannelSpec:
    type: str
    address: str  # one of ADDRESS_KINDS
    sender: str  # "module:Class" of its provider (a ChannelSender), imported when first used
    merchant_account: bool  # True: the merchant's own provider account; False: the platform's SMTP relay
    account_ref: str | None = None  # the account config field its callbacks name the account by
    in_flight: int = 16  # messages a sender keeps in flight when the account does not say


CHANNELS: dict[str, ChannelSpec] = {spec.type: spec for spec in (
    ChannelSpec("email", "email", "app.channels.email:EmailSender", merchant_account=False, in_flight=8),
    ChannelSpec("sms", "phone", "app.channels.sms:SmsSender", merchant_account=True, account_ref="accountSid"),
    ChannelSpec("push", "push", "app.channels.push:PushSender", merchant_account=True),
    ChannelSpec("whatsapp", "phone", "app.channels.whatsapp:WhatsAppSender", merchant_account=True,
                account_ref="phoneNumberId"),
)}
CHANNEL_TYPES: tuple[str, ...] = tuple(CHANNELS)
ACCOUNT_CHANNELS: tuple[str, ...] = tuple(t for t, spec in CHANNELS.items() if spec.merchant_account)
ACCOUNT_REF_FIELDS: dict[str, str] = {t: spec.account_ref for t, spec in CHANNELS.items() if spec.account_ref}


class UnknownChannel(LookupError):
    """A channel type the catalogue does not hold."""


def spec(channel_type: str) -> ChannelSpec:
    try:
        return CHANNELS[channel_type]
    except KeyError:
        raise UnknownChannel(f"Unknown channel type {channel_type!r}.") from None


def reachable_channels(*, email: bool, phone: bool, push: bool) -> set[str]:
    """The channels a contact with these addresses can be reached on."""
    have = {"email": email, "phone": phone, "push": push}
    return {t for t, channel in CHANNELS.items() if have[channel.address]}


@cache
def sender_class(channel_type: str) -> Any:
    module, _, name = spec(channel_type).sender.partition(":")
    return getattr(importlib.import_module(module), name)


def require_every_channel(mapping: dict[str, Any], what: str, channels: tuple[str, ...] = CHANNEL_TYPES) -> None:
    """Checked where a per-channel table is defined: a channel left out fails at start-up."""
    if set(mapping) != set(channels):
        raise RuntimeError(f"{what} must cover exactly {', '.join(channels)}; it covers {', '.join(mapping)}.")
