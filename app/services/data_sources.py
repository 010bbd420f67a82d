"""Data sources: the merchant's connections, their encrypted configs, ingest keys, and the history
(sync runs, events) shown beside them. Every function takes the owner's id: another user's source
answers exactly like a missing one.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db, rowcount
from app.models import DataEvent, DataSource, EventFailure, IngestKey, ShopifyWebhookRegistration, SyncRun
from app.security import opaque_tokens, secret_box
from app.services import shopify_webhooks, source_syncs
from app.services.sealed_configs import sealed_config
from app.sources.configs import INGEST_KEY_TYPES, SECRET_FIELDS, calls_api, decrypt_config, load_config
from app.sources.shopify_webhooks import TOPICS

INGEST_KEY_PREFIX = "hik_"
EVENT_STATUSES = ("pending", "processed", "quarantined")


@dataclass(frozen=True)
class SourceView:
    """What the API shows of a source: the config with its secrets masked, never decrypted."""

    id: uuid.UUID
    source_type: str
    name: str
    config: dict[str, Any]
    status: str
    last_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    has_ingest_key: bool
    webhooks: dict[str, Any] | None  # Shopify: the subscriptions Herald registered in the shop
    ingest_key: str | None = None  # the plain key, only in the answer that created it


class _SourceViewBundle(orm.Bundle):
    """Result rows as SourceView, so a plain `scalars()` (and so SelectPage) yields views."""

    def create_row_processor(self, query, procs, labels):
        def make_view(row) -> SourceView:
            values = dict(zip(labels, (proc(row) for proc in procs)))
            values["config"] = secret_box.redact_fields(values["config"], SECRET_FIELDS[values["source_type"]])
            webhooks = {name: values.pop(f"webhook_{name}") for name in _WEBHOOK_FIELDS}
            values["webhooks"] = _webhooks_view(webhooks) if webhooks["status"] is not None else None
            return SourceView(**values)

        return make_view


_WEBHOOK_FIELDS = ("status", "subscriptions", "last_error", "registered_at", "callback_url")
_TOPIC_NAMES = {enum: topic for topic, enum in TOPICS.items()}


def _webhooks_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"status": row["status"], "topics": sorted(_TOPIC_NAMES.get(t, t) for t in row["subscriptions"] or {}),
            "address": row["callback_url"], "registered_at": row["registered_at"],
            "last_error": row["last_error"] if row["status"] != "registered" else None}


def decrypted_config(source: DataSource) -> dict[str, Any]:
    """The source's config with its secrets in plain text, for syncs and ingestion; never for the API."""
    return decrypt_config(source.source_type, source.config)


def owned_source(user_id: uuid.UUID, source_id: uuid.UUID, *, for_update: bool = False) -> DataSource:
    stmt = sa.select(DataSource).where(DataSource.id == source_id, DataSource.user_id == user_id)
    source = db.session.scalar(stmt.with_for_update() if for_update else stmt)
    if source is None:
        raise NotFound("Data source not found.")
    return source


def _views() -> sa.Select:
    last_failure = (
        sa.select(SyncRun.error)
        .where(SyncRun.data_source_id == DataSource.id, SyncRun.status == "failed")
        .order_by(SyncRun.started_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    has_key = sa.select(IngestKey.data_source_id).where(IngestKey.data_source_id == DataSource.id).exists()
    webhooks = ShopifyWebhookRegistration
    return sa.select(
        _SourceViewBundle(
            "source",
            DataSource.id, DataSource.source_type, DataSource.name, DataSource.config, DataSource.status,
            DataSource.last_sync_at, DataSource.created_at, DataSource.updated_at,
            sa.case((DataSource.status == "error", last_failure)).label("last_error"),
            has_key.label("has_ingest_key"),
            *(getattr(webhooks, name).label(f"webhook_{name}") for name in _WEBHOOK_FIELDS),
        )
    ).outerjoin(webhooks, webhooks.data_source_id == DataSource.id)


def list_sources(user_id: uuid.UUID, source_type: str | None = None, status: str | None = None) -> sa.Select:
    """The user's sources as SourceView rows, newest first."""
    stmt = _views().where(DataSource.user_id == user_id)
    if source_type is not None:
        stmt = stmt.where(DataSource.source_type == source_type)
    if status is not None:
        stmt = stmt.where(DataSource.status == status)
    return stmt.order_by(DataSource.created_at.desc(), DataSource.id.desc())


def get_source(user_id: uuid.UUID, source_id: uuid.UUID) -> SourceView:
    view = db.session.scalar(_views().where(DataSource.id == source_id, DataSource.user_id == user_id))
    if view is None:
        raise NotFound("Data source not found.")
    return view


def create_source(user_id: uuid.UUID, source_type: str, name: str, config: Mapping[str, Any]) -> SourceView:
    """Store a new active source; pixel and GTM sources get an ingest key, shown only in this answer.
    A Shopify source's webhook subscriptions are registered in its shop by a worker."""
    source = DataSource(
        id=uuid.uuid4(), user_id=user_id, source_type=source_type, name=name,
        config=_stored_config(source_type, config), status="active",
    )
    db.session.add(source)
    db.session.flush()
    ingest_key = _issue_ingest_key(source.id) if source_type in INGEST_KEY_TYPES else None
    if source_type == "shopify":
        shopify_webhooks.request_registration(source.id)
    db.session.commit()
    return replace(get_source(user_id, source.id), ingest_key=ingest_key)


def update_source(user_id: uuid.UUID, source_id: uuid.UUID, changes: Mapping[str, Any]) -> SourceView:
    """Rename, (de)activate, or merge config changes over the stored config.

    Secrets left out of the change, or sent back as the redaction mask, keep their stored value.
    A config change takes a source out of `error` and checks it again at once (when it has API
    credentials); a Shopify source whose shop, token or API version changed registers its webhook
    subscriptions again.
    """
    source = owned_source(user_id, source_id, for_update=True)
    if changes.get("source_type", source.source_type) != source.source_type:
        raise ValidationFailed(
            "A source's type cannot be changed; create a new source instead.",
            errors={"sourceType": ["Cannot be changed."]},
        )
    before = after = None
    if "config" in changes:
        before = decrypted_config(source)
        source.config = _stored_config(source.source_type, _merged_config(source, changes["config"]))
        after = decrypted_config(source)
    for attribute in ("name", "status"):
        if attribute in changes:
            setattr(source, attribute, changes[attribute])
    if before is not None and after is not None and after != before:
        _config_changed(source, before, after)
    db.session.commit()
    return get_source(user_id, source_id)


def _config_changed(source: DataSource, before: dict[str, Any], after: dict[str, Any]) -> None:
    if source.status == "error":
        source.status = "active"
    if source.status == "active" and calls_api(after):
        db.session.flush()
        source_syncs.start_run(source.id, "config")
    if source.source_type == "shopify":
        shopify_webhooks.config_changed(source.id, before, after)


def delete_source(user_id: uuid.UUID, source_id: uuid.UUID) -> None:
    """Delete the source; the database cascades to its events, sync runs and ingest key. A Shopify
    source's webhook subscriptions are removed from its shop by a worker."""
    source = db.session.scalar(
        sa.select(DataSource).where(DataSource.id == source_id, DataSource.user_id == user_id).with_for_update())
    if source is None:
        raise NotFound("Data source not found.")
    if source.source_type == "shopify":
        try:
            shopify_webhooks.source_deleted(source.id, decrypted_config(source))
        except ValueError:  # credentials that no longer decrypt cannot remove anything
            pass
    deleted = db.session.execute(
        sa.delete(DataSource).where(DataSource.id == source_id, DataSource.user_id == user_id)
    )
    if rowcount(deleted) == 0:
        raise NotFound("Data source not found.")
    db.session.commit()


def rotate_ingest_key(user_id: uuid.UUID, source_id: uuid.UUID) -> str:
    """Replace the source's ingest key: the new plain key is returned once; the old one stops working."""
    # Locked so a concurrent delete cannot slip between the check and the write.
    source = owned_source(user_id, source_id, for_update=True)
    if source.source_type not in INGEST_KEY_TYPES:
        raise Conflict("This source type authenticates with signed webhooks, not an ingest key.")
    ingest_key = _issue_ingest_key(source.id)
    db.session.commit()
    return ingest_key


def list_sync_runs(user_id: uuid.UUID, source_id: uuid.UUID) -> sa.Select:
    owned_source(user_id, source_id)
    return (
        sa.select(SyncRun)
        .where(SyncRun.data_source_id == source_id)
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
    )


def list_events(user_id: uuid.UUID, source_id: uuid.UUID, status: str | None = None,
                event_type: str | None = None) -> sa.Select:
    """The source's raw events newest first, each with its processing status and last error."""
    owned_source(user_id, source_id)
    event_status = sa.case(
        (EventFailure.quarantined_at.is_not(None), "quarantined"),
        (DataEvent.processed_at.is_not(None), "processed"),
        else_="pending",
    )
    # Each result row holds one Row: the bundle's fields.
    stmt: sa.Select[sa.Row[Any]] = (
        sa.select(
            orm.Bundle(
                "event",
                DataEvent.id, DataEvent.event_type, DataEvent.event_data, DataEvent.processed_at,
                DataEvent.created_at, event_status.label("status"), EventFailure.last_error.label("error"),
            )
        )
        .outerjoin(EventFailure, EventFailure.data_event_id == DataEvent.id)
        .where(DataEvent.data_source_id == source_id)
    )
    if status is not None:
        stmt = stmt.where(event_status == status)
    if event_type is not None:
        stmt = stmt.where(DataEvent.event_type == event_type)
    return stmt.order_by(DataEvent.created_at.desc(), DataEvent.id.desc())


def _stored_config(source_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return sealed_config(load_config, source_type, config, SECRET_FIELDS[source_type], "source")


def _merged_config(source: DataSource, changes: Mapping[str, Any]) -> dict[str, Any]:
    secrets = SECRET_FIELDS[source.source_type]
    kept = {name: value for name, value in changes.items()
            if not (name in secrets and value == secret_box.REDACTED)}
    return {**decrypted_config(source), **kept}


def _issue_ingest_key(source_id: uuid.UUID) -> str:
    """A fresh key for the source; only its hash is stored, replacing any earlier key's in place."""
    ingest_key = INGEST_KEY_PREFIX + opaque_tokens.new_secret()
    key_hash = opaque_tokens.hash_secret(ingest_key)
    db.session.execute(
        pg_insert(IngestKey)
        .values(data_source_id=source_id, key_hash=key_hash)
        .on_conflict_do_update(index_elements=[IngestKey.data_source_id],
                               set_={"keyHash": key_hash, "createdAt": sa.func.now()})
    )
    return ingest_key
