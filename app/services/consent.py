"""Channel consent rules, shared by the contacts API, imports, event processing and unsubscribes.

Consent per channel is one of `subscribed`, `unsubscribed`, `bounced`, `complained`, and remembers
who set it (`contact`, `merchant`, `source`, `provider`). What a contact said themself, or what a
provider reported (bounce, complaint, carrier opt-out), outranks the merchant's lists and synced
data: only the contact can undo their own opt-out.
"""
from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy import orm

from app.channels.catalogue import CHANNEL_TYPES, reachable_channels
from app.extensions import db
from app.models.contacts import CONSENT_VALUES

SUBSCRIBED = "subscribed"
# Sources whose non-subscribed answer stands against the merchant's data.
AUTHORITATIVE_SOURCES = frozenset({"contact", "provider"})
WEAK_SOURCES = frozenset({"merchant", "source"})


def merge_consent(
    current: Mapping[str, str],
    current_sources: Mapping[str, str],
    incoming: Mapping[str, str],
    source: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """The consent and its sources after `source` states `incoming`; refused changes are dropped."""
    consent, sources = dict(current), dict(current_sources)
    for channel, value in incoming.items():
        if channel not in CHANNEL_TYPES or value not in CONSENT_VALUES:
            raise ValueError(f"unknown consent {channel}={value}")
        held_by_contact = sources.get(channel) in AUTHORITATIVE_SOURCES and consent.get(channel) != SUBSCRIBED
        if held_by_contact and source in WEAK_SOURCES:
            continue
        consent[channel], sources[channel] = value, source
    return consent, sources


def addressable_channels(email: str | None, phone: str | None, has_push: bool) -> set[str]:
    return reachable_channels(email=bool(email), phone=bool(phone), push=has_push)


def with_default_consent(
    consent: Mapping[str, str], sources: Mapping[str, str], channels: set[str], source: str
) -> tuple[dict[str, str], dict[str, str]]:
    """A channel with an address and no stated consent is `subscribed` (the merchant vouches)."""
    missing = {channel: SUBSCRIBED for channel in channels if channel not in consent}
    return merge_consent(consent, sources, missing, source)


_DECLARE = sa.text("SELECT set_config('herald.consent_via', :via, true), set_config('herald.consent_ip', :ip, true),"
                   " set_config('herald.consent_user_agent', :user_agent, true)")


def declare(via: str, ip: str | None = None, user_agent: str | None = None,
            session: orm.Session | None = None) -> None:
    """Say, for the rest of the current transaction, how the consent changes it writes come about
    (`api`, `import`, `event`, `unsubscribe_link`, `provider`, `suppression`...) and, for the
    person's own action, from which IP address and user agent: the consent history's trigger
    (migration 0017) records it with each change."""
    params = {"via": via, "ip": ip or "", "user_agent": (user_agent or "")[:500]}
    (session.execute if session is not None else db.session.execute)(_DECLARE, params)
