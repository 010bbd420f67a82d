"""Data sources: CRUD, ingest keys, syncs and events."""
from __future__ import annotations

from app.api.blueprint import ApiBlueprint

blp = ApiBlueprint("data_sources", __name__, url_prefix="/api/v1/data-sources", description="Connected data sources")
