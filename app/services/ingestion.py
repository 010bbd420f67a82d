"""Ingestion: authenticate what providers send, and store each provider event once.

Every request is stored with one SQL statement whatever its size: the de-duplication keys and the
events go in together, and an event whose key is already known is dropped by the same statement.
Processing is then hinted (after commit, debounced through Redis); beat sweeps anything missed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.errors import Forbidden, Unauthorized
from app.extensions import db
from app.models import DataSource, IngestKey
from app.schemas import json_input
from app.security import opaque_tokens
from app.services import bulk_sql, data_sources
from app.services.event_processing import hint_processing

BAD_SIGNATURE = "Invalid webhook signature."
BAD_KEY = "Invalid ingest key."
MAX_HEADER_KEY = 200

# An event holding text PostgreSQL cannot store (`q`: why) is stored with that text replaced,
# already processed, with a quarantine record saying why; the rest of its batch is stored as usual.
# An event may carry other keys besides its own (`a`): it is stored only when none of them was
# seen before either, and all of them are remembered.
_STORE = sa.text(
    """
    WITH input AS MATERIALIZED (
        SELECT DISTINCT ON (e.k) uuid_generate_v4() AS id, e.k, e.t, e.d, e.q, coalesce(e.a, '{}') AS a
        FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(k text, t text, d jsonb, q text, a text[])
    ),
    fresh AS (
        INSERT INTO data_event_keys ("dataSourceId", "dedupeKey")
        SELECT DISTINCT CAST(:source_id AS uuid), key
        FROM (SELECT k AS key FROM input UNION ALL SELECT unnest(a) FROM input) AS keys
        ORDER BY 2  -- one lock order for every request: two deliveries sharing keys never deadlock
        ON CONFLICT DO NOTHING
        RETURNING "dedupeKey"
    ),
    stored AS (
        INSERT INTO data_events (id, "dataSourceId", "eventType", "eventData", "processedAt")
        SELECT input.id, CAST(:source_id AS uuid), input.t, input.d, CASE WHEN input.q IS NOT NULL THEN now() END
        FROM input JOIN fresh ON fresh."dedupeKey" = input.k
        WHERE cardinality(input.a) = 0 OR input.a <@ (SELECT array_agg("dedupeKey"::text) FROM fresh)
        RETURNING id
    ),
    quarantined AS (
        INSERT INTO data_event_failures ("dataEventId", attempts, "lastError", "quarantinedAt")
        SELECT input.id, 0, input.q, now() FROM input JOIN stored ON stored.id = input.id WHERE input.q IS NOT NULL
    )
    SELECT count(*) FROM stored
    """
)


@dataclass(frozen=True)
class IncomingEvent:
    dedupe_key: str
    event_type: str
    event_data: dict[str, Any]
    # Further identities of the same delivery (a Shopify retry keeps its webhook id): any one of
    # them already seen makes the event a duplicate.
    other_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreResult:
    accepted: int
    duplicates: int


def verify_shopify_webhook(source_id: uuid.UUID, raw_body: bytes, signature: str | None) -> None:
    """HMAC-SHA256 of the exact bytes received, base64, compared in constant time — before any
    parsing. An unknown source answers like a bad signature (no probing for source ids)."""
    source = db.session.get(DataSource, source_id)
    if source is None or source.source_type != "shopify" or not signature:
        raise Unauthorized(BAD_SIGNATURE)
    secret = data_sources.decrypted_config(source).get("webhookSecret", "")
    expected = base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, signature.strip()):
        raise Unauthorized(BAD_SIGNATURE)
    _require_active(source.status)


def verify_ingest_key(source_id: uuid.UUID, source_type: str, presented: str | None) -> None:
    row = db.session.execute(
        sa.select(IngestKey.key_hash, DataSource.source_type, DataSource.status)
        .join(DataSource, DataSource.id == IngestKey.data_source_id)
        .where(IngestKey.data_source_id == source_id)
    ).first()
    if row is None or row.source_type != source_type or not presented:
        raise Unauthorized(BAD_KEY)
    if not opaque_tokens.secret_matches(presented, row.key_hash):
        raise Unauthorized(BAD_KEY)
    _require_active(row.status)


def _require_active(status: str) -> None:
    if status == "inactive":
        raise Forbidden("This data source is inactive.")


def insert_new_events(source_id: uuid.UUID, events: list[IncomingEvent]) -> int:
    """Insert the events whose keys the source has not seen; how many were new. No commit."""
    if not events:
        return 0
    payload = bulk_sql.to_json([_storable(event) for event in events])
    return db.session.execute(_STORE, {"events": payload, "source_id": str(source_id)}).scalar_one()


def _storable(event: IncomingEvent) -> dict[str, Any]:
    row: dict[str, Any] = {"k": event.dedupe_key, "t": event.event_type, "d": event.event_data, "q": None}
    if event.other_keys:
        row["a"] = [key if json_input.storable(key) else _unstorable_key(key) for key in event.other_keys]
    if json_input.storable(event.event_data) and json_input.storable([event.dedupe_key, event.event_type]):
        return row
    problem = json_input.first_problem(event.event_data)
    path, why = problem or ((), "The event name or id cannot be stored.")
    where = ".".join(str(part) for part in path)
    return {**row, "k": _unstorable_key(event.dedupe_key), "t": json_input.storable_text(event.event_type),
            "d": json_input.storable_copy(event.event_data),
            "q": f"Quarantined on arrival: {where + ': ' if where else ''}{why} Such characters are shown as U+FFFD."}


def _unstorable_key(key: str) -> str:
    return f"unstorable:sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def store_events(source_id: uuid.UUID, events: list[IncomingEvent]) -> StoreResult:
    stored = insert_new_events(source_id, events)
    db.session.commit()
    if stored:
        hint_processing()
    return StoreResult(accepted=len(events), duplicates=len(events) - stored)


def content_key(prefix: str, event: dict[str, Any]) -> str:
    """A de-duplication key for events that carry no id of their own: the same delivery, twice,
    has the same content."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return f"{prefix}:sha256:{hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()}"


def shopify_events(topic: str, event_id: str | None, webhook_id: str | None, payload: dict[str, Any],
                   raw_body: bytes) -> list[IncomingEvent]:
    """One event, known by what Shopify says identifies it: `X-Shopify-Event-Id` is the same for
    every delivery of one event (to every subscription), `X-Shopify-Webhook-Id` for every retry of
    one delivery. Either seen before makes it a duplicate; with neither, the body stands in."""
    keys = [_header_key("shopify:event", event_id), _header_key("shopify:webhook", webhook_id)]
    known = [key for key in keys if key is not None]
    if not known:
        known = [f"shopify:body:{hashlib.sha256(raw_body).hexdigest()}"]
    return [IncomingEvent(known[0], topic, payload, other_keys=tuple(known[1:]))]


def _header_key(prefix: str, value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    # A header is the sender's to fill: an unreasonably long one is kept by its digest.
    if len(value) > MAX_HEADER_KEY:
        value = "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}:{value}"


def capi_events(batch: dict[str, Any]) -> list[IncomingEvent]:
    """Meta de-duplicates on event_id + event_name; so does Herald."""
    return [
        IncomingEvent(
            f"capi:{e['event_name']}:{e['event_id']}" if e.get("event_id") else content_key("capi", e),
            e["event_name"],
            e,
        )
        for e in batch["data"]
    ]


def ga4_events(batch: dict[str, Any]) -> list[IncomingEvent]:
    """Each GA4 event is stored with its request envelope merged in (app.sources.normalize), the
    event's own fields (its `timestamp_micros`) over the request's.

    GA4 events carry no id: the key is the content plus the position in the request, so a
    redelivered request is dropped while two identical events in one request both count.
    """
    envelope = {k: v for k, v in batch.items() if k != "events" and v is not None}
    events = []
    for position, event in enumerate(batch["events"]):
        own = {k: v for k, v in event.items() if v is not None}
        data = {**envelope, **own, "params": event.get("params") or {}}
        events.append(IncomingEvent(content_key("ga4", {"position": position, **data}), event["name"], data))
    return events


def event_data_events(events: list[dict[str, Any]]) -> list[IncomingEvent]:
    """Server-side GTM event data, each object stored as sent; keyed like GA4 events (no id of their own)."""
    return [IncomingEvent(content_key("sgtm", {"position": position, **event}), event["event_name"], event)
            for position, event in enumerate(events)]
