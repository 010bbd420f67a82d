"""Contact timezones derived from what events tell, stored beside the merchant's own, never over it.

`contact_timezones` holds at most one zone per contact, with its source, strongest first:
`merchant` (set through the API or an import), `shopify` (the Shopify customer's default address),
`event` (a place another event names: a billing address, GA4's or Meta's country and region). A
derived zone replaces a stored one of its own source or a weaker one: a customer who moves takes
their new address's zone, while a region seen in tracking (often where they browsed from) does not
replace their address book's. Nothing derived replaces the merchant's word.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.extensions import db
from app.models import ContactTimezone
from app.services import bulk_sql
from app.sources.normalize import EVENT_PLACE, SHOPIFY_ADDRESS, DerivedZone

# Only a stored zone the new one outranks or equals is replaced, and only when it changes (a
# customer's every event would otherwise rewrite the same row).
_UPSERT = (
    'ON CONFLICT ("contactId") DO UPDATE SET timezone = EXCLUDED.timezone, source = EXCLUDED.source, '
    '"updatedAt" = now() '
    f"WHERE (contact_timezones.source = '{EVENT_PLACE}' "
    f"OR (contact_timezones.source = '{SHOPIFY_ADDRESS}' AND EXCLUDED.source = '{SHOPIFY_ADDRESS}')) "
    "AND (contact_timezones.timezone, contact_timezones.source) "
    "IS DISTINCT FROM (EXCLUDED.timezone, EXCLUDED.source)"
)


def store_derived(observations: Iterable[tuple[str, DerivedZone | None, datetime]]) -> int:
    """Store what a batch of events said of their contacts' zones — (contact id as text, zone, when)
    — in one statement; the rows written. Per contact the strongest source counts, then the newest
    event. The caller commits."""
    best: dict[str, tuple[tuple[bool, datetime], DerivedZone]] = {}
    for contact_id, zone, moment in observations:
        if zone is None:
            continue
        rank = (zone.source == SHOPIFY_ADDRESS, moment)
        if contact_id not in best or rank >= best[contact_id][0]:
            best[contact_id] = (rank, zone)
    # In contact order (canonical ids sort as text as they do as ids): two batches upserting the same
    # contacts lock their rows in the same order.
    rows = [{"contactId": contact_id, "timezone": zone.zone, "source": zone.source}
            for contact_id, (_, zone) in sorted(best.items(), key=lambda item: item[0])]
    return bulk_sql.insert_rows(db.session, ContactTimezone.__table__, rows, _UPSERT)
