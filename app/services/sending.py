"""The send engine: a channel's queued ledger rows go out in batches, at the channel's rate, and
stop between batches when the campaign is paused or cancelled.

Order of work for each batch: take rate tokens (shared in Redis) → claim rows (`sending`, with a
lease) and COMMIT → hand each message to the provider → record outcomes and move counters, every
few messages. A worker killed anywhere leaves at most the rows of its open chunk in `sending`; the
reaper calls them `unknown`. Nothing is ever claimed twice, so nobody gets a message twice.
"""
from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import timedelta

from flask import current_app

from app.channels.base import (
    ChannelSender,
    OutgoingMessage,
    ProviderUnavailable,
    SendOutcome,
    UnsupportedChannel,
)
from app.channels.registry import sender_for
from app.extensions import db, redis_client
from app.jobs import enqueue_after_commit
from app.models import Campaign, CampaignChannel, Contact
from app.services import contacts, send_rate
from app.services import delivery_ledger as ledger
from app.services.delivery_ledger import ClaimedDelivery, Outcome
from app.services.rendering import contact_context

log = logging.getLogger(__name__)

SEND_BATCH = "sends.send_batch"
# Rows claimed (and outcomes committed) at a time: the most a worker killed mid-send can leave
# `unknown`. Small enough to keep that honest, large enough that claims cost little per message.
BATCH_SIZE = 25
TIME_BUDGET = 120.0  # seconds per task, then a fresh task continues (well under the time limits)
MAX_PROVIDER_WAIT = 30.0  # the longest a provider's Retry-After holds a sender


def lease() -> timedelta:
    return timedelta(seconds=current_app.config["HERALD_SETTINGS"].send_lease_seconds)


def send_channel(channel_id: uuid.UUID) -> int:
    """Send the channel's queued rows until done, paused, or out of time; messages handed over."""
    found = ledger.channel_info(channel_id)
    if found is None or found[0].status not in ("pending", "sending"):
        return 0
    channel, campaign = found
    rate = channel.config.get("messagesPerSecond")
    deadline = time.monotonic() + TIME_BUDGET
    handed = 0
    with contextlib.ExitStack() as stack:
        # Connect before claiming anything: a provider that can't be reached leaves the rows queued.
        sender = _open_sender(stack, channel, campaign) if ledger.has_queued(channel.id) else None
        while time.monotonic() < deadline and ledger.campaign_status(campaign.id) == "running":
            db.session.commit()  # end the read: each step below is its own short transaction
            granted, wait = send_rate.take(channel.id, rate, BATCH_SIZE)
            if not granted:
                time.sleep(min(wait, 1.0))
                continue
            claimed = ledger.claim(channel.id, granted, lease())
            db.session.commit()
            if not claimed:
                break
            handed += _send_claimed(sender, channel, campaign, claimed)
    _continue_or_finish(channel, campaign)
    return handed


def _open_sender(stack: contextlib.ExitStack, channel: CampaignChannel, campaign: Campaign) -> ChannelSender | None:
    try:
        return stack.enter_context(sender_for(channel.channel_type, campaign.user_id))
    except UnsupportedChannel:
        return None


def _send_claimed(sender: ChannelSender | None, channel: CampaignChannel, campaign: Campaign,
                  claimed: list[ClaimedDelivery]) -> int:
    contacts = ledger.contacts_by_id([row.contact_id for row in claimed if row.contact_id])
    outcomes: list[Outcome] = []
    for index, row in enumerate(claimed):
        try:
            outcome = _send_one(sender, channel, campaign, row, contacts.get(row.contact_id))
        except ProviderUnavailable as exc:
            # Nothing of this row or the ones after it reached the provider: all go back to the queue.
            outcomes += [Outcome(r.id, "queued", error=str(exc)) for r in claimed[index:]]
            _record(channel, outcomes)
            raise
        outcomes.append(outcome)
        if outcome.retry_after is not None:
            # The provider asked to slow down: the rest of the batch goes back to the queue untried,
            # and this sender waits as asked (bounded) before taking more.
            outcomes += [Outcome(r.id, "queued") for r in claimed[index + 1:]]
            _record(channel, outcomes)
            time.sleep(min(outcome.retry_after, MAX_PROVIDER_WAIT))
            return sum(o.status in ("sent", "delivered") for o in outcomes)
    _record(channel, outcomes)
    return sum(outcome.status in ("sent", "delivered") for outcome in outcomes)


def _send_one(sender: ChannelSender | None, channel: CampaignChannel, campaign: Campaign,
              row: ClaimedDelivery, contact: Contact | None) -> Outcome:
    if sender is None:
        return Outcome(row.id, "failed", error=f"No provider is configured for {channel.channel_type} messages.")
    if contact is None:
        return Outcome(row.id, "failed", error="The contact was deleted before the message was sent.")
    message = OutgoingMessage(
        delivery_id=row.id, campaign_id=campaign.id, channel_id=channel.id, contact_id=contact.id,
        user_id=campaign.user_id, address=row.address, contact=contact_context(contact), config=channel.config,
    )
    try:
        result = sender.send(message)
        if result.opted_out:
            contacts.record_opt_out(contact.id, [channel.channel_type], source="provider")
        return _as_outcome(row.id, result)
    except ProviderUnavailable:
        raise
    except Exception as exc:  # the provider may have taken it: never retry, report it
        log.exception("send outcome unknown", extra={"delivery_id": str(row.id)})
        return Outcome(row.id, "unknown", error=f"{type(exc).__name__}: {exc}")


def _as_outcome(delivery_id: uuid.UUID, result: SendOutcome) -> Outcome:
    if result.accepted:
        return Outcome(delivery_id, "delivered" if result.delivered else "sent", result.provider_message_id)
    if result.retry_after is not None:
        return Outcome(delivery_id, "queued", error=result.error, retry_after=result.retry_after)
    return Outcome(delivery_id, "failed", error=result.error or "Refused by the provider.")


def _record(channel: CampaignChannel, outcomes: list[Outcome]) -> None:
    ledger.record(channel.id, channel.channel_type, outcomes)
    db.session.commit()


def _continue_or_finish(channel: CampaignChannel, campaign: Campaign) -> None:
    """Out of time with rows still queued: a fresh task carries on. Otherwise settle the channel
    (and the campaign, if it was the last one)."""
    if ledger.campaign_status(campaign.id) == "running" and ledger.has_queued(channel.id):
        enqueue_after_commit(SEND_BATCH, str(channel.id))
    else:
        ledger.finish_done_channels(campaign.id)
    db.session.commit()


def reap_and_resume() -> dict[str, int]:
    """Beat: settle rows whose worker died, apply receipts that raced their message's recording,
    finish channels that are done, and restart sending for running campaigns whose queued rows
    nobody is working on (a lost message, a killed worker)."""
    campaigns = set(ledger.reap_expired_leases())
    ledger.apply_matched_held_receipts()
    resumed = 0
    for campaign_id, channel_id, _ in ledger.unsettled_channels():
        if _claim_restart(channel_id):
            enqueue_after_commit(SEND_BATCH, str(channel_id))
            resumed += 1
    campaigns |= set(ledger.running_campaigns_without_work())
    for campaign_id in campaigns:
        ledger.finish_done_channels(campaign_id)
    db.session.commit()
    return {"campaigns": len(campaigns), "resumed": resumed}


def _claim_restart(channel_id: uuid.UUID) -> bool:
    """At most one restart per channel per minute, however many beats tick."""
    return bool(redis_client().set(f"herald:resume:channel:{channel_id}", b"1", nx=True, ex=60))
