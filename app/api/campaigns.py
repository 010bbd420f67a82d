"""Campaigns: CRUD, channels, state changes, stats and the delivery ledger."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.campaigns import (
    CampaignCreateSchema,
    CampaignQuerySchema,
    CampaignSchema,
    CampaignStatsSchema,
    CampaignUpdateSchema,
    ChannelCreateSchema,
    ChannelSchema,
    ChannelUpdateSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    ScheduleSchema,
)
from app.security.principal import current_user_id
from app.services import campaign_lifecycle, campaign_stats, campaigns

blp = ApiBlueprint("campaigns", __name__, write_scope="campaigns:write", url_prefix="/api/v1/campaigns",
                   description="Campaigns and their channels")

CAMPAIGN = "/<uuid:campaign_id>"
CHANNEL = CAMPAIGN + "/channels/<uuid:channel_id>"


# --- Campaigns ----------------------------------------------------------------------------------

@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(CampaignQuerySchema, location="query")
@blp.response(200, CampaignSchema(many=True))
@blp.paginate(SelectPage)
def list_campaigns(filters):
    """The merchant's campaigns with their channels, newest first."""
    return campaigns.campaigns_query(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(CampaignCreateSchema)
@blp.response(201, CampaignSchema)
def create_campaign(data):
    """Create a draft campaign; add channels and audiences, then schedule or launch it."""
    return campaigns.create_campaign(current_user_id(), data)


@blp.route(CAMPAIGN, methods=["GET"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def get_campaign(campaign_id: uuid.UUID):
    return campaigns.owned_campaign(current_user_id(), campaign_id)


@blp.route(CAMPAIGN, methods=["PATCH"])
@blp.authenticated
@blp.arguments(CampaignUpdateSchema)
@blp.response(200, CampaignSchema)
def update_campaign(changes, campaign_id: uuid.UUID):
    """Change given fields of a draft or scheduled campaign (409 otherwise); `config` is replaced whole."""
    return campaigns.update_campaign(current_user_id(), campaign_id, changes)


@blp.route(CAMPAIGN, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_campaign(campaign_id: uuid.UUID):
    """Delete a campaign (a running or paused one answers 409).

    One that has sent messages disappears from the API but is kept, so the unsubscribe and
    tracking links in those messages keep working."""
    campaigns.delete_campaign(current_user_id(), campaign_id)


# --- State changes (app.services.campaign_lifecycle; imported at call time so this blueprint loads
# without it) ----------------------------------------------------------------------------------

@blp.route(CAMPAIGN + "/schedule", methods=["POST"])
@blp.authenticated
@blp.arguments(ScheduleSchema)
@blp.response(200, CampaignSchema)
def schedule(data, campaign_id: uuid.UUID):
    """draft or scheduled → scheduled at `scheduledAt` (409 from any other state)."""
    return campaign_lifecycle.schedule(current_user_id(), campaign_id, data["scheduled_at"],
                                       local_time=data.get("local_time"), passed_zones=data["passed_zones"])


@blp.route(CAMPAIGN + "/unschedule", methods=["POST"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def unschedule(campaign_id: uuid.UUID):
    """scheduled → draft."""
    return campaign_lifecycle.unschedule(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/launch", methods=["POST"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def launch(campaign_id: uuid.UUID):
    """Send now: draft or scheduled → running."""
    return campaign_lifecycle.launch_now(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/pause", methods=["POST"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def pause(campaign_id: uuid.UUID):
    """running → paused; sending stops between batches."""
    return campaign_lifecycle.pause(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/resume", methods=["POST"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def resume(campaign_id: uuid.UUID):
    """paused → running."""
    return campaign_lifecycle.resume(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/cancel", methods=["POST"])
@blp.authenticated
@blp.response(200, CampaignSchema)
def cancel(campaign_id: uuid.UUID):
    """→ completed; recipients not yet sent to are skipped."""
    return campaign_lifecycle.cancel(current_user_id(), campaign_id)


# --- Channels -----------------------------------------------------------------------------------

@blp.route(CAMPAIGN + "/channels", methods=["GET"])
@blp.authenticated
@blp.response(200, ChannelSchema(many=True))
@blp.paginate(SelectPage)
def list_channels(campaign_id: uuid.UUID):
    """The campaign's channels in the order they were added."""
    return campaigns.channels_query(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/channels", methods=["POST"])
@blp.authenticated
@blp.arguments(ChannelCreateSchema)
@blp.response(201, ChannelSchema)
def create_channel(data, campaign_id: uuid.UUID):
    """Add a channel (one per type; 409 for a second one, or once the campaign is sending)."""
    return campaigns.create_channel(current_user_id(), campaign_id, data["channel_type"], data["config"])


@blp.route(CHANNEL, methods=["GET"])
@blp.authenticated
@blp.response(200, ChannelSchema)
def get_channel(campaign_id: uuid.UUID, channel_id: uuid.UUID):
    return campaigns.get_channel(current_user_id(), campaign_id, channel_id)


@blp.route(CHANNEL, methods=["PATCH"])
@blp.authenticated
@blp.arguments(ChannelUpdateSchema)
@blp.response(200, ChannelSchema)
def update_channel(changes, campaign_id: uuid.UUID, channel_id: uuid.UUID):
    """Change the config (merged over the stored one) while the campaign is draft or scheduled."""
    return campaigns.update_channel(current_user_id(), campaign_id, channel_id, changes)


@blp.route(CHANNEL, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_channel(campaign_id: uuid.UUID, channel_id: uuid.UUID):
    campaigns.delete_channel(current_user_id(), campaign_id, channel_id)


# --- Results ------------------------------------------------------------------------------------

@blp.route(CAMPAIGN + "/stats", methods=["GET"])
@blp.authenticated
@blp.response(200, CampaignStatsSchema)
def stats(campaign_id: uuid.UUID):
    """Per channel: counters, ledger rows by status and rates; and their totals."""
    return campaign_stats.campaign_stats(current_user_id(), campaign_id)


@blp.route(CAMPAIGN + "/deliveries", methods=["GET"])
@blp.authenticated
@blp.arguments(DeliveryQuerySchema, location="query")
@blp.response(200, DeliverySchema(many=True))
@blp.paginate(SelectPage)
def list_deliveries(filters, campaign_id: uuid.UUID):
    """The campaign's delivery ledger, newest first."""
    return campaign_stats.deliveries_query(current_user_id(), campaign_id, **filters)
