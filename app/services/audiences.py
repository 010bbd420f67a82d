"""Audiences: who a campaign targets, their previews and their last computed sizes.

The definition language itself (validation and SQL) lives in `app.services.audience_sql`. Audiences
change only while their campaign is draft or scheduled, under the campaign's row lock: a launch
(a guarded UPDATE of that row) waits for the change and then resolves what was committed.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from app import task_names as tasks
from app.errors import Conflict, NotFound
from app.extensions import db, rowcount
from app.jobs import enqueue_after_commit
from app.models import Audience, Campaign, Contact, utcnow
from app.services.audience_sql import compile_definition, validate_definition
from app.services.campaigns import EDITABLE_STATUSES, owned_by, owned_campaign

__all__ = [
    "compile_definition", "validate_definition", "preview", "audience_size", "audiences_query", "get_audience",
    "create_audience", "update_audience", "delete_audience", "refresh_audience", "count_unsized_audiences",
]

T = TypeVar("T")
DEFAULT_SAMPLE_SIZE = 10
EXACT_COUNT_SECONDS = 0.6
SAMPLE_SECONDS = 0.25
ESTIMATE_SECONDS = 2.0
# Contact ids are random (v4) UUIDs, so the ids below a bound are a uniform slice of the contacts:
# the first 1/64 of the id space, read by primary key, scaled back up.
ESTIMATE_SLICE = 64
_SLICE_BOUND = uuid.UUID(int=(1 << 128) // ESTIMATE_SLICE)
QUERY_CANCELED = "57014"
MAX_SAMPLE_SIZE = 100
_SAMPLE_COLUMNS = (
    Contact.id.label("id"), Contact.email.label("email"), Contact.phone.label("phone"),
    Contact.first_name.label("first_name"), Contact.last_name.label("last_name"),
)


def audience_size(user_id: uuid.UUID, definition: Mapping[str, Any]) -> int:
    """How many of the merchant's contacts match the definition now (one query, however long)."""
    return _count(compile_definition(user_id, definition))


def preview(user_id: uuid.UUID, definition: Mapping[str, Any],
            sample_size: int = DEFAULT_SAMPLE_SIZE) -> dict[str, Any]:
    """`{"count": n, "estimated": bool, "sample": [{id, email, phone, first_name, last_name}, ...]}`,
    newest contacts first, in about a second whatever the merchant's size: the exact count if it
    can be had within EXACT_COUNT_SECONDS, else an estimate from a slice of the contacts."""
    matching = compile_definition(user_id, definition)
    # The definition's conditions straight on the contacts, newest first: the planner walks the
    # (userId, createdAt) index and stops at the first matches instead of resolving everyone.
    newest = (matching.with_only_columns(*_SAMPLE_COLUMNS)
              .order_by(Contact.created_at.desc(), Contact.id.desc())
              .limit(max(0, min(sample_size, MAX_SAMPLE_SIZE))))
    sample = _within(SAMPLE_SECONDS, lambda: [dict(row) for row in db.session.execute(newest).mappings()])
    count = _within(EXACT_COUNT_SECONDS, lambda: _count(matching))
    if count is not None:
        return {"count": count, "estimated": False, "sample": sample or []}
    return {"count": _estimate(matching), "estimated": True, "sample": sample or []}


def audiences_query(user_id: uuid.UUID, campaign_id: uuid.UUID) -> sa.Select[Audience]:
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
    if rowcount(deleted) == 0:
        raise NotFound("Audience not found.")
    db.session.commit()


def refresh_audience(user_id: uuid.UUID, campaign_id: uuid.UUID, audience_id: uuid.UUID) -> Audience:
    """Recompute the stored size. Allowed in any campaign status: it changes no one's targeting."""
    audience = get_audience(user_id, campaign_id, audience_id)
    audience.last_size, audience.last_computed_at = audience_size(user_id, audience.definition), utcnow()
    db.session.commit()
    return audience


def count_unsized_audiences(limit: int = 20) -> int:
    """Worker: count the audiences whose size was too slow to count while the merchant waited. Each
    size is stored only if the definition is still the one counted."""
    pending = db.session.execute(
        sa.select(Audience.id, Audience.definition, Campaign.user_id)
        .join(Campaign, Campaign.id == Audience.campaign_id)
        .where(Audience.last_computed_at.is_(None)).limit(limit)
    ).all()
    db.session.commit()
    for audience_id, definition, user_id in pending:
        size = audience_size(user_id, definition)
        db.session.execute(
            sa.update(Audience).where(Audience.id == audience_id, Audience.definition == definition)
            .values(last_size=size, last_computed_at=utcnow())
        )
        db.session.commit()
    return len(pending)


def _editable_campaign(user_id: uuid.UUID, campaign_id: uuid.UUID) -> Campaign:
    """The user's campaign, locked, while its audiences may change (409 once it has launched)."""
    campaign = owned_campaign(user_id, campaign_id, for_update=True)
    if campaign.status not in EDITABLE_STATUSES:
        raise Conflict(f"The audiences of a {campaign.status} campaign cannot change; "
                       "only draft and scheduled campaigns can.")
    return campaign


def _count(matching: sa.Select[uuid.UUID]) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(matching.subquery())) or 0


def _estimate(matching: sa.Select[uuid.UUID]) -> int | None:
    """The size of the audience from a 1/ESTIMATE_SLICE slice of the contacts (None if even that
    runs out of time)."""
    in_slice = _within(ESTIMATE_SECONDS, lambda: _count(matching.where(Contact.id < _SLICE_BOUND)))
    return None if in_slice is None else in_slice * ESTIMATE_SLICE


def _within(seconds: float, query: Callable[[], T]) -> T | None:
    """`query()` under a statement timeout, in a savepoint (None if it ran out of time). A timeout
    rolls the savepoint back, and the setting with it; after a result the default is put back."""
    try:
        with db.session.begin_nested():
            db.session.execute(sa.select(sa.func.set_config("statement_timeout", f"{max(1, int(seconds * 1000))}ms", True)))
            result = query()
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) != QUERY_CANCELED:
            raise
        return None
    db.session.execute(sa.text("SET LOCAL statement_timeout TO DEFAULT"))
    return result


def _measured(user_id: uuid.UUID, definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition with its size if it can be counted at once; otherwise the size is left unknown
    and a worker counts it (raises ValidationFailed before anything has changed)."""
    size = _within(EXACT_COUNT_SECONDS, lambda: audience_size(user_id, definition))
    if size is None:
        enqueue_after_commit(tasks.COUNT_AUDIENCES)
    return {"definition": dict(definition), "last_size": size, "last_computed_at": utcnow() if size is not None else None}
