"""Campaigns: CRUD, channels, and access rules shared by every campaign route."""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.errors import NotFound
from app.extensions import db
from app.models import Campaign


def owned_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID, for_update: bool = False) -> Campaign:
    """The user's campaign; another user's answers exactly like a missing one (404)."""
    stmt = sa.select(Campaign).where(Campaign.id == campaign_id, Campaign.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    campaign = db.session.scalar(stmt)
    if campaign is None:
        raise NotFound("Campaign not found.")
    return campaign
