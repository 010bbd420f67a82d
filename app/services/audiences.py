"""Audiences: who a campaign targets, their previews and their last computed sizes.

The definition language itself (validation and SQL) lives in `app.services.audience_sql`. Audiences
change only while their campaign is draft or scheduled, under the campaign's row lock: a launch
(a guarded UPDATE of that row) waits for the change and then resolves what was committed.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Audience, Campaign, Contact, utcnow
from app.services.audience_sql import compile_definition, validate_definition
from app.services.campaigns import EDITABLE_STATUSES, owned_by, owned_campaign

__all__ = [
    "compile_definition", "validate_definition", "preview", "audience_size", "audiences_query", "get_audience",
    "create_audience", "update_audience", "delete_audience", "refresh_audience",
]

DEFAULT_SAMPLE_SIZE = 10
MAX_SAMPLE_SIZE = 100
_SAMPLE_COLUMNS = (
    Contact.id.label("id"), Contact.email.label("email"), Contact.phone.label("phone"),
    Contact.first_name.label("first_name"), Contact.last_name.label("last_name"),
)


def audience_size(user_id: uuid.UUID, definition: Mapping[str, Any]) -> int:
    """How many of the merchant's contacts match the definition now (one query)."""
    return _count(compile_definition(user_id, definition))


def preview(user_id: uuid.UUID, definition: Mapping[str, Any],
            sample_size: int = DEFAULT_SAMPLE_SIZE) -> dict[str, Any]:
    """`{"count": n, "sample": [{id, email, phone, first_name, last_name}, ...]}`, newest contacts
    first: two queries, whatever the size of the audience."""
    matching = compile_definition(user_id, definition)
    sample = db.session.execute(
        sa.select(*_SAMPLE_COLUMNS)
        .where(Contact.id.in_(matching))
        .order_by(Contact.created_at.desc(), Contact.id.desc())
        .limit(max(0, min(sample_size, MAX_SAMPLE_SIZE)))
    ).mappings()
    return {"count": _count(matching), "sample": [dict(row) for row in sample]}


def audiences_query(user_id: uuid.UUID, campaign_id: uuid.UUID) -> sa.Select[tuple[Audience]]:
    """The campaign's audiences, oldest first (for SelectPage); 404 for another user's campaign."""
    owned_campaign(user_id, campaign_id)
    return sa.select(Audience).where(Audience.campaign_id == campaign_id).order_by(Audience.created_at, Audience.id)


def get_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, audience_id: uuid.UUID) -> Audience:
    audience = db.session.scalar(
        sa.select(Audience).join(Campaign, Campaign.id == Audience.campaign_id)
        .where(Audience.id == audience_id, Audience.campaign_id == campaign_id, owned_by(user_id))
    )
    if audience is None:
        raise NotFound("Audience not found.")
    return audience


def create_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, name: str,
                    definition: Mapping[str, Any]) -> Audience:
    """Add an audience to a draft or scheduled campaign, with its size computed now."""
    campaign = _editable_campaign(user_id, campaign_id)
    audience = Audience(campaign_id=campaign.id, name=name, **_measured(user_id, definition))
    db.session.add(audience)
    db.session.commit()
    return audience


def update_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, audience_id: uuid.UUID,
                    changes: Mapping[str, Any]) -> Audience:
    """Rename it or replace its definition (its size is then recomputed)."""
    _editable_campaign(user_id, campaign_id)
    audience = get_audience(user_id, campaign_id, audience_id)
    values = _measured(user_id, changes["definition"]) if "definition" in changes else {}
    if "name" in changes:
        values["name"] = changes["name"]
    for attribute, value in values.items():
        setattr(audience, attribute, value)
    db.session.commit()
    return audience


def delete_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, audience_id: uuid.UUID) -> None:
    _editable_campaign(user_id, campaign_id)
    deleted = db.session.execute(
        sa.delete(Audience).where(Audience.id == audience_id, Audience.campaign_id == campaign_id)
    )
    if deleted.rowcount == 0:
        raise NotFound("Audience not found.")
    db.session.commit()


def refresh_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, audience_id: uuid.UUID) -> Audience:
    """Recompute the stored size. Allowed in any campaign status: it changes no one's targeting."""
    audience = get_audience(user_id, campaign_id, audience_id)
    audience.last_size, audience.last_computed_at = audience_size(user_id, audience.definition), utcnow()
    db.session.commit()
    return audience


def _editable_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """The user's campaign, locked, while its audiences may change (409 once it has launched)."""
    campaign = owned_campaign(user_id, campaign_id, for_update=True)
    if campaign.status not in EDITABLE_STATUSES:
        raise Conflict(f"The audiences of a {campaign.status} campaign cannot change; "
                       "only draft and scheduled campaigns can.")
    return campaign


def _count(matching: sa.Select[tuple[uuid.UUID]]) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(matching.subquery()))


def _measured(user_id: uuid.UUID, definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition with its current size; raises ValidationFailed before anything has changed."""
    return {"definition": dict(definition), "last_size": audience_size(user_id, definition),
            "last_computed_at": utcnow()}
