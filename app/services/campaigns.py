"""Campaigns: CRUD, channels, and access rules shared by every campaign route.

Every function takes the owner's id: another user's campaign or channel answers exactly like a
missing one. A campaign and its channels change only while it is draft or scheduled; the edit holds
the campaign's row lock, so a launch (a guarded UPDATE of that row) waits for it and then sees the
result. State changes themselves live in `app.services.campaign_lifecycle`.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.channels.configs import load_channel_config
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db, rowcount
from app.models import (
    Campaign,
    CampaignChannel,
    CampaignSendOptions,
    Conversation,
    DeletedCampaign,
    Delivery,
)
from app.models.flows import backs_a_flow
from app.services import senders

EDITABLE_STATUSES = ("draft", "scheduled")
# Sending has started and not finished: deleting would pull the ledger from under the senders.
UNDELETABLE_STATUSES = ("running", "paused")
CAMPAIGN_FIELDS = ("name", "description", "config", "conversation_id")


def owned_by(user_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """The one rule for which campaigns a merchant sees: their own, minus those they deleted and
    those that carry a flow's steps (the flow API shows those)."""
    return sa.and_(Campaign.user_id == user_id, ~sa.exists().where(DeletedCampaign.campaign_id == Campaign.id),
                   ~backs_a_flow(Campaign.id))


def owned_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID, for_update: bool = False) -> Campaign:
    """The user's campaign; another user's, or a deleted one, answers exactly like a missing one (404)."""
    stmt = sa.select(Campaign).where(Campaign.id == campaign_id, owned_by(user_id))
    if for_update:
        stmt = stmt.with_for_update()
    campaign = db.session.scalar(stmt)
    if campaign is None:
        raise NotFound("Campaign not found.")
    return campaign


# --- Campaigns ----------------------------------------------------------------------------------

def campaigns_query(user_id: uuid.UUID, status: str | None = None) -> sa.Select[Campaign]:
    """The user's campaigns with their channels, newest first (for SelectPage)."""
    stmt = sa.select(Campaign).where(owned_by(user_id)).options(orm.selectinload(Campaign.channels))
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    return stmt.order_by(Campaign.created_at.desc(), Campaign.id.desc())


def create_campaign(user_id: uuid.UUID, data: Mapping[str, Any]) -> Campaign:
    """A new draft campaign, without channels."""
    _check_conversation(user_id, data.get("conversation_id"))
    fields = {"config": {}, **{name: data[name] for name in CAMPAIGN_FIELDS if name in data}}
    campaign = Campaign(user_id=user_id, status="draft", **fields)
    db.session.add(campaign)
    if data.get("frequency_cap_exempt"):
        campaign.send_options = CampaignSendOptions(frequency_cap_exempt=True)
    db.session.commit()
    return campaign


def update_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID, changes: Mapping[str, Any]) -> Campaign:
    """Change the given fields (`config` is replaced whole) of a draft or scheduled campaign."""
    campaign = _editable_campaign(user_id, campaign_id)
    if "conversation_id" in changes:
        _check_conversation(user_id, changes["conversation_id"])
    for name in CAMPAIGN_FIELDS:
        if name in changes:
            setattr(campaign, name, changes[name])
    if "frequency_cap_exempt" in changes:
        send_options(campaign).frequency_cap_exempt = changes["frequency_cap_exempt"]
    db.session.commit()
    return campaign


def send_options(campaign: Campaign) -> CampaignSendOptions:
    """The campaign's send options, created with the defaults when it has none yet. No commit."""
    if campaign.send_options is None:
        campaign.send_options = CampaignSendOptions(passed_zones="next_day", frequency_cap_exempt=False)
    return campaign.send_options


def delete_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID) -> None:
    """Delete a campaign that is not sending.

    One that never handed a message over is removed, cascading to channels, audiences and ledger.
    One that did is only hidden: its ledger backs the unsubscribe and tracking links in messages
    people already have, so those keep working.
    """
    campaign = owned_campaign(user_id, campaign_id, for_update=True)
    if campaign.status in UNDELETABLE_STATUSES:
        raise Conflict(f"A {campaign.status} campaign cannot be deleted; cancel it first.")
    handed_over = sa.select(Delivery.id).where(Delivery.campaign_id == campaign.id,
                                               Delivery.status.in_(("sent", "delivered", "unknown"))).exists()
    if db.session.scalar(sa.select(handed_over)):
        hide = pg_insert(DeletedCampaign).values(campaign_id=campaign.id).on_conflict_do_nothing()
        db.session.execute(hide)
    else:
        db.session.execute(sa.delete(Campaign).where(Campaign.id == campaign.id))
    db.session.commit()


# --- Channels -----------------------------------------------------------------------------------

def channels_query(user_id: uuid.UUID, campaign_id: uuid.UUID) -> sa.Select[CampaignChannel]:
    """The campaign's channels in the order they were added (as embedded in the campaign)."""
    owned_campaign(user_id, campaign_id)
    return (
        sa.select(CampaignChannel)
        .where(CampaignChannel.campaign_id == campaign_id)
        .order_by(CampaignChannel.created_at, CampaignChannel.id)
    )


def get_channel(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_id: uuid.UUID) -> CampaignChannel:
    return _campaign_channel(owned_campaign(user_id, campaign_id), channel_id)


def create_channel(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_type: str,
                   config: Mapping[str, Any]) -> CampaignChannel:
    """Add a channel; a campaign has at most one channel of each type (409 for a second one)."""
    # The campaign's row lock serializes concurrent adds, so two requests cannot both pass the check.
    campaign = _editable_campaign(user_id, campaign_id)
    taken = sa.select(CampaignChannel.id).where(
        CampaignChannel.campaign_id == campaign.id, CampaignChannel.channel_type == channel_type
    )
    if db.session.scalar(taken) is not None:
        raise Conflict(f"This campaign already has its {channel_type} channel; change that one instead.")
    valid = _valid_config(channel_type, config)
    _check_sender(campaign, channel_type, valid)
    channel = CampaignChannel(campaign_id=campaign.id, channel_type=channel_type, status="pending", config=valid)
    db.session.add(channel)
    db.session.commit()
    return channel


def update_channel(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_id: uuid.UUID,
                   changes: Mapping[str, Any]) -> CampaignChannel:
    """Merge config changes over the stored config (null removes an optional field)."""
    campaign = _editable_campaign(user_id, campaign_id)
    channel = _campaign_channel(campaign, channel_id)
    if changes.get("channel_type", channel.channel_type) != channel.channel_type:
        raise ValidationFailed(
            "A channel's type cannot be changed; add a channel of the other type instead.",
            errors={"channelType": ["Cannot be changed."]},
        )
    if "config" in changes:
        valid = _valid_config(channel.channel_type, {**channel.config, **changes["config"]})
        _check_sender(campaign, channel.channel_type, valid)
        channel.config = valid
    db.session.commit()
    return channel


def delete_channel(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_id: uuid.UUID) -> None:
    campaign = _editable_campaign(user_id, campaign_id)
    deleted = db.session.execute(
        sa.delete(CampaignChannel).where(CampaignChannel.id == channel_id, CampaignChannel.campaign_id == campaign.id)
    )
    if rowcount(deleted) == 0:
        raise NotFound("Channel not found.")
    db.session.commit()


# --- Rules --------------------------------------------------------------------------------------

def _editable_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """The user's campaign, locked, while it may still be changed (409 once sending has begun)."""
    campaign = owned_campaign(user_id, campaign_id, for_update=True)
    if campaign.status not in EDITABLE_STATUSES:
        raise Conflict(f"A {campaign.status} campaign cannot be changed; only draft and scheduled ones can.")
    return campaign


def _campaign_channel(campaign: Campaign, channel_id: uuid.UUID) -> CampaignChannel:
    channel = db.session.scalar(
        sa.select(CampaignChannel).where(CampaignChannel.id == channel_id, CampaignChannel.campaign_id == campaign.id)
    )
    if channel is None:
        raise NotFound("Channel not found.")
    return channel


def _check_sender(campaign: Campaign, channel_type: str, config: dict[str, Any]) -> None:
    """A scheduled campaign launches without another look: its channels keep a verified sender
    (the same rule as at schedule time, app.services.senders)."""
    if campaign.status == "scheduled":
        # Errors under `config`, as this route's own validation reports them.
        senders.require_verified(campaign.user_id, [senders.SendingChannel((), channel_type, config)])


def _check_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID | None) -> None:
    """A campaign may only link one of the user's own conversations (422 otherwise)."""
    if conversation_id is None:
        return
    # KEY SHARE: the conversation cannot be deleted between this check and the campaign's insert.
    found = db.session.scalar(
        sa.select(Conversation.id)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id, Conversation.status != "deleted")
        .with_for_update(read=True, key_share=True)
    )
    if found is None:
        raise ValidationFailed(
            "The conversation does not exist.", errors={"conversationId": ["Not one of your conversations."]}
        )


def _valid_config(channel_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A complete config validated for its type; errors are reported under `config`."""
    try:
        return load_channel_config(channel_type, config)
    except ValidationError as exc:
        raise ValidationFailed(
            f"The config is not valid for this {channel_type} channel.", errors={"config": exc.messages}
        ) from exc
