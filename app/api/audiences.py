"""Audiences: who a campaign targets (a sub-resource of campaigns), and previews of a definition."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.audiences import (
    AudienceCreateSchema,
    AudiencePreviewRequestSchema,
    AudiencePreviewSchema,
    AudienceSchema,
    AudienceUpdateSchema,
)
from app.security.api_keys import READ
from app.security.principal import current_user_id
from app.services import audiences

blp = ApiBlueprint("audiences", __name__, write_scope="campaigns:write", url_prefix="/api/v1",
                   description="Campaign audiences and previews")

AUDIENCES = "/campaigns/<uuid:campaign_id>/audiences"
AUDIENCE = f"{AUDIENCES}/<uuid:audience_id>"


@blp.route("/audiences/preview", methods=["POST"])
@blp.authenticated(scope=READ)  # counts and samples contacts, changes nothing
@blp.arguments(AudiencePreviewRequestSchema)
@blp.response(200, AudiencePreviewSchema)
def preview(data):
    """How many contacts a definition matches now, with a sample of them."""
    return audiences.preview(current_user_id(), data["definition"], data["sample_size"])


@blp.route(AUDIENCES, methods=["GET"])
@blp.authenticated
@blp.response(200, AudienceSchema(many=True))
@blp.paginate(SelectPage)
def list_audiences(campaign_id: uuid.UUID):
    """The campaign's audiences, oldest first."""
    return audiences.audiences_query(current_user_id(), campaign_id)


@blp.route(AUDIENCES, methods=["POST"])
@blp.authenticated
@blp.arguments(AudienceCreateSchema)
@blp.response(201, AudienceSchema)
def create_audience(data, campaign_id: uuid.UUID):
    """Add an audience to a draft or scheduled campaign (409 otherwise); its size is computed now."""
    return audiences.create_audience(current_user_id(), campaign_id, **data)


@blp.route(AUDIENCE, methods=["GET"])
@blp.authenticated
@blp.response(200, AudienceSchema)
def get_audience(campaign_id: uuid.UUID, audience_id: uuid.UUID):
    return audiences.get_audience(current_user_id(), campaign_id, audience_id)


@blp.route(AUDIENCE, methods=["PATCH"])
@blp.authenticated
@blp.arguments(AudienceUpdateSchema)
@blp.response(200, AudienceSchema)
def update_audience(changes, campaign_id: uuid.UUID, audience_id: uuid.UUID):
    """Rename, or replace the definition (the size is recomputed); draft or scheduled campaigns only."""
    return audiences.update_audience(current_user_id(), campaign_id, audience_id, changes)


@blp.route(AUDIENCE, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_audience(campaign_id: uuid.UUID, audience_id: uuid.UUID):
    """Remove an audience from a draft or scheduled campaign."""
    audiences.delete_audience(current_user_id(), campaign_id, audience_id)


@blp.route(f"{AUDIENCE}/refresh", methods=["POST"])
@blp.authenticated
@blp.response(200, AudienceSchema)
def refresh_audience(campaign_id: uuid.UUID, audience_id: uuid.UUID):
    """Recompute `lastSize` now; allowed in any campaign status."""
    return audiences.refresh_audience(current_user_id(), campaign_id, audience_id)
