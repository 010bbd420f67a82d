"""Data sources: CRUD, ingest keys, syncs and events."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.data_sources import (
    CreatedDataSourceSchema,
    DataEventQuerySchema,
    DataEventSchema,
    DataSourceCreateSchema,
    DataSourceQuerySchema,
    DataSourceSchema,
    DataSourceUpdateSchema,
    IngestKeySchema,
    SyncRunSchema,
)
from app.security.principal import current_user_id
from app.services import data_sources, source_syncs

# events:write: the sources events come from.
blp = ApiBlueprint("data_sources", __name__, write_scope="events:write", url_prefix="/api/v1/data-sources",
                   description="Connected data sources")


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(DataSourceQuerySchema, location="query")
@blp.response(200, DataSourceSchema(many=True))
@blp.paginate(SelectPage)
def list_sources(filters):
    """The merchant's data sources, newest first."""
    return data_sources.list_sources(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(DataSourceCreateSchema)
@blp.response(201, CreatedDataSourceSchema)
def create_source(data):
    """Connect a source. Pixel and GTM sources get an ingest key, shown only in this answer."""
    return data_sources.create_source(current_user_id(), **data)


@blp.route("/<uuid:source_id>", methods=["GET"])
@blp.authenticated
@blp.response(200, DataSourceSchema)
def get_source(source_id: uuid.UUID):
    return data_sources.get_source(current_user_id(), source_id)


@blp.route("/<uuid:source_id>", methods=["PATCH"])
@blp.authenticated
@blp.arguments(DataSourceUpdateSchema)
@blp.response(200, DataSourceSchema)
def update_source(changes, source_id: uuid.UUID):
    """Rename, activate/deactivate, or change config fields (merged over the stored config)."""
    return data_sources.update_source(current_user_id(), source_id, changes)


@blp.route("/<uuid:source_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_source(source_id: uuid.UUID):
    """Delete the source with its events and sync history."""
    data_sources.delete_source(current_user_id(), source_id)


@blp.route("/<uuid:source_id>/ingest-key", methods=["POST"])
@blp.authenticated
@blp.response(200, IngestKeySchema)
def rotate_ingest_key(source_id: uuid.UUID):
    """Replace the ingest key (pixel and GTM sources; 409 for Shopify). The old key stops working."""
    return {"ingest_key": data_sources.rotate_ingest_key(current_user_id(), source_id)}


@blp.route("/<uuid:source_id>/sync", methods=["POST"])
@blp.authenticated
@blp.response(202, SyncRunSchema)
def sync_now(source_id: uuid.UUID):
    """Queue a sync of the source now."""
    return source_syncs.request_sync(current_user_id(), source_id)


@blp.route("/<uuid:source_id>/syncs", methods=["GET"])
@blp.authenticated
@blp.response(200, SyncRunSchema(many=True))
@blp.paginate(SelectPage)
def list_sync_runs(source_id: uuid.UUID):
    """The source's sync history, newest first."""
    return data_sources.list_sync_runs(current_user_id(), source_id)


@blp.route("/<uuid:source_id>/events", methods=["GET"])
@blp.authenticated
@blp.arguments(DataEventQuerySchema, location="query")
@blp.response(200, DataEventSchema(many=True))
@blp.paginate(SelectPage)
def list_events(filters, source_id: uuid.UUID):
    """The source's raw events, newest first, with their processing status."""
    return data_sources.list_events(current_user_id(), source_id, **filters)
