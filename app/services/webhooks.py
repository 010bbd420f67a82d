"""A merchant's webhook endpoints: registering, changing, disabling and enabling them, their
delivery log, and replaying a delivery. Every function takes the owner's id: another merchant's
endpoint or delivery answers exactly like a missing one."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import orm

from app import clock
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.models import WebhookDelivery, WebhookEndpoint
from app.security.secret_box import encrypt
from app.services import webhook_delivery
from app.services.transactions import transaction
from app.services.webhook_events import written
from app.webhooks import signatures
from app.webhooks.catalogue import EVENT_TYPES
from app.webhooks.urls import url_problem

MAX_ENDPOINTS = 20
NOT_FOUND = "Webhook endpoint not found."


@dataclass(frozen=True)
class CreatedEndpoint:
    """A new endpoint as the API shows it once, with its signing secret."""

    endpoint: WebhookEndpoint
    secret: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)


def create_endpoint(user_id: uuid.UUID, url: str, event_types: Iterable[str],
                    description: str | None = None) -> CreatedEndpoint:
    """Register an endpoint for `event_types`, enabled at once. Its signing secret is in this answer
    only; Herald keeps it encrypted, to sign with."""
    _check_url(url)
    secret = signatures.new_secret()
    with transaction():
        # Serializes a merchant's creations, so the count below cannot be passed by racing requests.
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                           {"key": f"herald.webhook_endpoints:{user_id}"})
        count = db.session.scalar(sa.select(sa.func.count()).where(WebhookEndpoint.user_id == user_id))
        if (count or 0) >= MAX_ENDPOINTS:
            raise Conflict(f"A merchant has at most {MAX_ENDPOINTS} webhook endpoints: delete one first.")
        endpoint = WebhookEndpoint(user_id=user_id, url=url, description=description,
                                   event_types=_ordered(event_types), secret=encrypt(secret))
        db.session.add(endpoint)
    return CreatedEndpoint(endpoint, secret)


def endpoints_query(user_id: uuid.UUID) -> sa.Select:
    return (sa.select(WebhookEndpoint).where(WebhookEndpoint.user_id == user_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))


def get_endpoint(user_id: uuid.UUID, endpoint_id: uuid.UUID, lock: bool = False) -> WebhookEndpoint:
    query = sa.select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id)
    endpoint = db.session.scalar(query.with_for_update() if lock else query)
    if endpoint is None:
        raise NotFound(NOT_FOUND)
    return endpoint


def update_endpoint(user_id: uuid.UUID, endpoint_id: uuid.UUID, changes: Mapping[str, Any]) -> WebhookEndpoint:
    """Change the URL, event types or description; `enabled: false` disables the endpoint (its
    pending deliveries fail), `enabled: true` enables it again with its failure record cleared."""
    if "url" in changes:
        _check_url(changes["url"])
    with transaction():
        endpoint = get_endpoint(user_id, endpoint_id, lock=True)
        if "url" in changes:
            endpoint.url = changes["url"]
        if "event_types" in changes:
            endpoint.event_types = _ordered(changes["event_types"])
        if "description" in changes:
            endpoint.description = changes["description"]
        if changes.get("enabled") is True and not endpoint.enabled:
            endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = True, None, None
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
        elif changes.get("enabled") is False and endpoint.enabled:
            db.session.flush()
            webhook_delivery.disable(endpoint.id, webhook_delivery.DISABLED_BY_MERCHANT, clock.now())
            db.session.refresh(endpoint)
    return endpoint


def delete_endpoint(user_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """The endpoint goes, with its delivery log; nothing more is sent to it."""
    with transaction():
        deleted = db.session.scalar(sa.delete(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.user_id == user_id).returning(WebhookEndpoint.id))
        if deleted is None:
            raise NotFound(NOT_FOUND)


def deliveries_query(user_id: uuid.UUID, endpoint_id: uuid.UUID, status: str | None = None) -> sa.Select:
    """The endpoint's delivery log, newest first, each with its event."""
    get_endpoint(user_id, endpoint_id)
    query = (sa.select(WebhookDelivery).options(orm.joinedload(WebhookDelivery.event))
             .where(WebhookDelivery.endpoint_id == endpoint_id)
             .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()))
    return query.where(WebhookDelivery.status == status) if status else query


def replay(user_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send the delivery's event to the endpoint again, as a new delivery (the same event id,
    retried like any other). Refused (409) while the endpoint is disabled."""
    with transaction():
        endpoint = get_endpoint(user_id, endpoint_id, lock=True)
        original = db.session.scalar(sa.select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id))
        if original is None:
            raise NotFound("Webhook delivery not found.")
        if not endpoint.enabled:
            raise Conflict("The endpoint is disabled: enable it (PATCH enabled: true) before replaying.")
        delivery = WebhookDelivery(event_id=original.event_id, endpoint_id=endpoint.id, replay_of=original.id,
                                   next_attempt_at=clock.now())
        db.session.add(delivery)
        db.session.flush()
        written(1)
    return db.session.scalars(sa.select(WebhookDelivery).options(orm.joinedload(WebhookDelivery.event))
                              .where(WebhookDelivery.id == delivery.id)).one()


def _ordered(event_types: Iterable[str]) -> list[str]:
    chosen = set(event_types)
    unknown = chosen - set(EVENT_TYPES)
    if unknown:  # the schema refuses these too; never store a type nothing emits
        raise ValidationFailed("Unknown event types.", errors={"eventTypes": [f"Unknown: {', '.join(sorted(unknown))}."]})
    return [name for name in EVENT_TYPES if name in chosen]


def _check_url(url: str) -> None:
    problem = url_problem(url, current_app.config["HERALD_SETTINGS"].webhook_allowed_private_networks)
    if problem is not None:
        raise ValidationFailed("The webhook URL cannot be used.", errors={"url": [problem]})

