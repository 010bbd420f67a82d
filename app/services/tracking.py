"""Tracking: the links a sent message carries, and the opens, clicks and unsubscribes they bring back.

Links go out signed (app.security.link_tokens, or a short link's code: app.security.short_codes) and
point only at URLs stored in `message_links` for the message's channel, so a click can never be
turned into an open redirect. A stored URL is the final one, UTM tags included (app.services.utm).
Opens and clicks are unique per delivery: the first one stamps the ledger row with a guarded UPDATE
and moves the channel's counter in the same transaction; any later one changes nothing.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.errors import NotFound
from app.extensions import db
from app.models import CampaignChannel, Delivery, MessageLink
from app.security.link_tokens import LinkPurpose, link_signer
from app.security.short_codes import short_codes
from app.services import bounces, contacts, utm, webhook_events
from app.services.consent import declare
from app.services.transactions import transaction

CONTACT = "contact"  # an unsubscribe link is the contact speaking for themself
# The webhook event of a delivery's first open, and first click.
TRACKED_EVENTS = {"opened_at": "message.opened", "clicked_at": "message.clicked"}
INVALID_LINK = "This link is not valid."


def _verified(purpose: LinkPurpose, token: str) -> tuple[uuid.UUID, ...]:
    ids = link_signer().verify(purpose, token)
    if ids is None:
        raise NotFound(INVALID_LINK)
    return ids


# --- Opens and clicks --------------------------------------------------------------------------

def _stamp_first(column: orm.InstrumentedAttribute, counter: orm.InstrumentedAttribute,
                 delivery_id: uuid.UUID, url: str | None = None) -> bool:
    """Stamp `column` if still empty and count it on the channel; False when it was already set.

    The `IS NULL` guard makes concurrent or repeated requests count once: a second UPDATE waits
    for the first one's row lock, then finds the column set and matches nothing.
    """
    channel_id = db.session.scalar(
        sa.update(Delivery).where(Delivery.id == delivery_id, column.is_(None))
        .values({column: sa.func.now()}).returning(Delivery.channel_id)
        .execution_options(synchronize_session=False)
    )
    if channel_id is None:
        return False
    db.session.execute(
        sa.update(CampaignChannel).where(CampaignChannel.id == channel_id)
        .values({counter: counter + 1}).execution_options(synchronize_session=False)
    )
    webhook_events.message_events(TRACKED_EVENTS[column.key], [delivery_id], {"url": url} if url else None)
    return True


def _require_delivery(delivery_id: uuid.UUID) -> None:
    if db.session.scalar(sa.select(Delivery.id).where(Delivery.id == delivery_id)) is None:
        raise NotFound(INVALID_LINK)


def record_open(token: str, count: bool = True) -> None:
    """An open pixel was fetched: the delivery's first open is stamped and counted (`count=False`
    for a HEAD request, which only checks the link: it shows nothing to anyone)."""
    (delivery_id,) = _verified(LinkPurpose.OPEN, token)
    with transaction():
        if count and _stamp_first(Delivery.opened_at, CampaignChannel.opened_count, delivery_id):
            bounces.end_streak_of(delivery_id)  # an opened email: its address works
        else:
            _require_delivery(delivery_id)


def record_click(token: str, count: bool = True) -> str:
    """A tracked link was followed: the URL to redirect to. The first click also counts as an open
    when the pixel was never loaded (images blocked): a click proves the message was opened. A HEAD
    request (`count=False`, link checkers) gets the URL and counts nothing."""
    delivery_id, link_id = _verified(LinkPurpose.CLICK, token)
    with transaction():
        url = db.session.scalar(
            sa.select(MessageLink.url)
            .join(Delivery, Delivery.channel_id == MessageLink.channel_id)
            .where(Delivery.id == delivery_id, MessageLink.id == link_id)
        )
        if url is None:  # a link of another channel's messages is no link of this one
            raise NotFound(INVALID_LINK)
        if count:
            _stamp_first(Delivery.clicked_at, CampaignChannel.clicked_count, delivery_id, url)
            if _stamp_first(Delivery.opened_at, CampaignChannel.opened_count, delivery_id):
                bounces.end_streak_of(delivery_id)
    return url


def record_short_click(code: str, count: bool = True) -> str:
    """A short link (SMS, WhatsApp) was followed: the URL to redirect to; the delivery's first click
    is counted. Unlike an email's, it says nothing about opens: those messages have no pixel, and
    their reads come from the provider's receipts."""
    codes = short_codes()
    parsed = codes.parse(code)
    if parsed is None:
        raise NotFound(INVALID_LINK)
    with transaction():
        # Every delivery and link whose id begins as the code says (all but always one of each);
        # the MAC picks the pair the code was made for.
        candidates = db.session.execute(
            sa.select(Delivery.id, MessageLink.id, MessageLink.url)
            .join(MessageLink, MessageLink.channel_id == Delivery.channel_id)
            .where(Delivery.id.between(*parsed.delivery_range), MessageLink.id.between(*parsed.link_range))
        ).all()
        found = next(((delivery_id, url) for delivery_id, link_id, url in candidates
                      if codes.made_for(parsed, delivery_id, link_id)), None)
        if found is None:
            raise NotFound(INVALID_LINK)
        if count:
            _stamp_first(Delivery.clicked_at, CampaignChannel.clicked_count, found[0], found[1])
    return found[1]


# --- Unsubscribe -------------------------------------------------------------------------------

def check_unsubscribe_link(token: str) -> None:
    """Raise NotFound unless `token` is a genuine unsubscribe link of an existing delivery."""
    (delivery_id,) = _verified(LinkPurpose.UNSUBSCRIBE, token)
    _require_delivery(delivery_id)


def unsubscribe(token: str, ip: str | None = None, user_agent: str | None = None) -> None:
    """The contact opts out of the channel the message came through (idempotent).

    Recorded as the contact's own word (source `contact`), so no import, sync or merchant edit can
    resubscribe them; the consent history keeps the request's IP and user agent. A contact deleted
    since the send has nothing left to unsubscribe.
    """
    (delivery_id,) = _verified(LinkPurpose.UNSUBSCRIBE, token)
    with transaction():
        declare("unsubscribe_link", ip, user_agent)
        row = db.session.execute(
            sa.select(Delivery.contact_id, Delivery.channel_type).where(Delivery.id == delivery_id)
        ).one_or_none()
        if row is None:
            raise NotFound(INVALID_LINK)
        if row.contact_id is not None:
            contacts.record_opt_out(row.contact_id, [row.channel_type], source=CONTACT)


# --- Links in outgoing messages ----------------------------------------------------------------

# Longer URLs stay untracked: a btree index entry (the unique channelId+url) must fit in a page.
MAX_TRACKED_URL = 2000
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\x7f]")


def is_trackable(url: str, public_base_url: str) -> bool:
    """Whether a message's link is rewritten to a tracked one: http(s), not already ours, short
    enough to store, and free of whitespace or control characters."""
    return (urlsplit(url).scheme.lower() in ("http", "https")
            and not url.startswith((f"{public_base_url}/t/", f"{public_base_url}/l/"))
            and len(url) <= MAX_TRACKED_URL and not _UNSAFE_IN_URL.search(url))


class LinkRegistry:
    """MessageLink ids for the URLs of a run's messages on one channel type, each URL looked up once
    per run, and stored as the URL a click redirects to: with the campaign's UTM tags."""

    def __init__(self, channel_type: str) -> None:
        self._channel_type = channel_type
        self._ids: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
        self._tags: dict[uuid.UUID, dict[str, str]] = {}  # per campaign, read once per run

    def ids_for(self, campaign_id: uuid.UUID, channel_id: uuid.UUID, urls: Iterable[str]) -> dict[str, uuid.UUID]:
        """The id of each URL as written in the message."""
        if campaign_id not in self._tags:
            self._tags[campaign_id] = utm.campaign_tags(campaign_id, self._channel_type)
        final = {url: _final_url(url, self._tags[campaign_id]) for url in urls}
        missing = [url for url in dict.fromkeys(final.values()) if (channel_id, url) not in self._ids]
        if missing:
            stored = store_links(channel_id, missing)
            self._ids.update({(channel_id, url): link_id for url, link_id in stored.items()})
        return {url: self._ids[(channel_id, final_url)] for url, final_url in final.items()}


def _final_url(url: str, tags: dict[str, str]) -> str:
    with_tags = utm.tagged(url, tags) if tags else url
    return with_tags if len(with_tags) <= MAX_TRACKED_URL else url


def store_links(channel_id: uuid.UUID, urls: list[str]) -> dict[str, uuid.UUID]:
    """The ids of `urls` for the channel, inserted where new.

    Committed at once on a connection of its own: a link must exist before the message carrying
    it leaves, whatever becomes of the sender's own transaction afterwards.
    """
    with orm.Session(db.engine) as session, session.begin():
        inserted = session.execute(
            pg.insert(MessageLink).values([{"channel_id": channel_id, "url": url} for url in urls])
            .on_conflict_do_nothing(index_elements=[MessageLink.channel_id, MessageLink.url])
            .returning(MessageLink.url, MessageLink.id)
        )
        ids: dict[str, uuid.UUID] = {url: link_id for url, link_id in inserted}
        # Rows another sender inserted first (ON CONFLICT DO NOTHING returns nothing for them).
        rest = [url for url in urls if url not in ids]
        if rest:
            found = session.execute(sa.select(MessageLink.url, MessageLink.id)
                                    .where(MessageLink.channel_id == channel_id, MessageLink.url.in_(rest)))
            ids.update({url: link_id for url, link_id in found})
    return ids
