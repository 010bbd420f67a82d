"""The campaign state machine: draft → scheduled → running ⇄ paused → completed, plus
draft → running (send now), scheduled → draft (unschedule) and cancel (→ completed).

Every transition is one guarded UPDATE (`... WHERE status IN (allowed) RETURNING`): zero rows means
the campaign was not in a state that allows it (409), whatever another process did meanwhile. A
launch — by the API or by beat — resolves the audiences into the delivery ledger in the same
transaction that makes the campaign `running`, so it happens exactly once.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app import task_names as tasks
from app.errors import Conflict, Forbidden, ValidationFailed
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import Audience, Campaign, CampaignChannel, User, utcnow
from app.services import delivery_ledger, sending
from app.services.campaigns import owned_campaign

LAUNCH_DUE_LIMIT = 50


def schedule(user_id: uuid.UUID, campaign_id: uuid.UUID, scheduled_at: datetime) -> Campaign:
    if scheduled_at <= utcnow():
        raise ValidationFailed("scheduledAt must be in the future.", errors={"scheduledAt": ["Must be in the future."]})
    campaign = owned_campaign(user_id, campaign_id)
    _check_launchable(campaign)
    return _transition(campaign, ("draft", "scheduled"), status="scheduled", scheduled_at=scheduled_at)


def unschedule(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    return _transition(owned_campaign(user_id, campaign_id), ("scheduled",), status="draft", scheduled_at=None)


def launch_now(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """Send now: draft or scheduled → running, the ledger written, sending started."""
    campaign = owned_campaign(user_id, campaign_id)
    _check_launchable(campaign)
    campaign = _transition(campaign, ("draft", "scheduled"), commit=False, status="running", started_at=sa.func.now())
    _start_sending(campaign)
    db.session.commit()
    return campaign


def pause(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """Senders stop between batches; nothing queued is lost."""
    return _transition(owned_campaign(user_id, campaign_id), ("running",), status="paused")


def resume(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """Continue from the ledger: only rows still queued are sent."""
    campaign = _transition(owned_campaign(user_id, campaign_id), ("paused",), commit=False, status="running")
    _enqueue_senders(campaign.id)
    db.session.commit()
    return campaign


def cancel(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """→ completed; recipients not yet sent to are skipped. A message already being handed to the
    provider finishes and is recorded as what it became."""
    campaign = owned_campaign(user_id, campaign_id)
    campaign = _transition(campaign, ("draft", "scheduled", "running", "paused"), commit=False,
                           status="completed", ended_at=sa.func.now())
    delivery_ledger.skip_queued(campaign.id, reason="cancelled")
    delivery_ledger.finish_done_channels(campaign.id)
    db.session.commit()
    return campaign


def launch_due() -> list[uuid.UUID]:
    """Beat: every scheduled campaign whose time has come starts, once, whichever beat or worker
    gets there first (SKIP LOCKED + the status guard)."""
    due = (
        sa.select(Campaign.id)
        .where(Campaign.status == "scheduled", Campaign.scheduled_at <= sa.func.timezone("UTC", sa.func.now()))
        .order_by(Campaign.scheduled_at)
        .limit(LAUNCH_DUE_LIMIT)
        .with_for_update(skip_locked=True)
    )
    started = db.session.scalars(
        sa.update(Campaign).where(Campaign.id.in_(due.scalar_subquery()))
        .values(status="running", started_at=sa.func.now(), updated_at=sa.func.now())
        .returning(Campaign.id)
    ).all()
    for campaign_id in started:
        _start_sending(db.session.get_one(Campaign, campaign_id))
    db.session.commit()
    return list(started)


def _check_launchable(campaign: Campaign) -> None:
    if not db.session.scalar(sa.select(User.is_verified).where(User.id == campaign.user_id)):
        raise Forbidden("Verify your email address before sending campaigns.")
    has_channel = db.session.scalar(sa.select(CampaignChannel.id).where(CampaignChannel.campaign_id == campaign.id).limit(1))
    has_audience = db.session.scalar(sa.select(Audience.id).where(Audience.campaign_id == campaign.id).limit(1))
    missing = {}
    if not has_channel:
        missing["channels"] = ["At least one channel is required."]
    if not has_audience:
        missing["audiences"] = ["At least one audience is required."]
    if missing:
        raise ValidationFailed("The campaign is not ready to send.", errors=missing)


def _transition(campaign: Campaign, allowed: tuple[str, ...], commit: bool = True, **values: Any) -> Campaign:
    columns = {getattr(Campaign, name): value for name, value in values.items()}
    changed = db.session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.status.in_(allowed))
        .values({**columns, Campaign.updated_at: sa.func.now()})
        .returning(Campaign.id)
    ).first()
    if changed is None:
        db.session.rollback()
        raise Conflict(f"A {campaign.status} campaign cannot do that.")
    if commit:
        db.session.commit()
    db.session.refresh(campaign)
    return campaign


def _start_sending(campaign: Campaign) -> None:
    delivery_ledger.snapshot(campaign)
    delivery_ledger.finish_done_channels(campaign.id)
    _enqueue_senders(campaign.id)


def _enqueue_senders(campaign_id: uuid.UUID) -> None:
    """As many sender tasks per open channel as its queued work calls for (they share its limits)."""
    for channel_id, queued in delivery_ledger.queued_by_channel(campaign_id):
        for _ in range(sending.senders_for(queued)):
            enqueue_after_commit(tasks.SEND_BATCH, str(channel_id))
