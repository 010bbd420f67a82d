"""People's data: what Herald holds about one person (export, consent history), and forgetting them.

Erasure removes or irreversibly redacts everything about the person while campaign totals stay
true: the contact goes with everything tied to it (identities, activity, push subscriptions, their
timezone, their consent history); their addresses leave the delivery ledger (rows stay counted);
their identifiers (email, phone, their SHA-256 forms, provider ids) are replaced in the raw event
payloads that name them; and their email and phone stay only as suppression hashes (reason
`erased`), so the next sync or event neither mails them nor brings them back as a contact.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app import clock
from app.extensions import db
from app.models import (
    Attribution,
    BounceEvent,
    Campaign,
    ConsentChange,
    Contact,
    ContactActivity,
    DataEvent,
    DataSource,
    Delivery,
    Suppression,
)
from app.models.ingestion import EventFailure
from app.services import bulk_sql, suppressions
from app.services.consent import declare
from app.services.contacts import get_contact
from app.services.transactions import snapshot, transaction
from app.sources.normalize import sha256_phone

ERASED = "[erased]"
ERASED_REASON = "erased"
CONTAINED_MIN = 6  # identifiers at least this long are looked for inside strings; shorter ones whole


_DROP_BOUNCE_MAIL = sa.text("DELETE FROM bounce_mail WHERE position(convert_to(:identifier, 'UTF8') IN raw) > 0")


def consent_history(user_id: uuid.UUID, contact_id: uuid.UUID) -> list[ConsentChange]:
    get_contact(user_id, contact_id)
    return list(db.session.scalars(sa.select(ConsentChange).where(ConsentChange.contact_id == contact_id)
                                   .order_by(ConsentChange.created_at, ConsentChange.id)))


@dataclass(frozen=True)
class ContactExport:
    exported_at: datetime
    contact: Contact
    consent_history: list[ConsentChange]
    activity: list[ContactActivity]
    messages: list[sa.Row[Any]]  # deliveries with their campaign's name
    attributions: list[Attribution]
    suppressions: list[Suppression]


def export(user_id: uuid.UUID, contact_id: uuid.UUID) -> ContactExport:
    """Everything held about the contact, read in one snapshot."""
    with snapshot():
        contact = get_contact(user_id, contact_id)
        hashes = [suppressions.address_hash(a) for a in _addresses(contact)]
        found = ContactExport(
            exported_at=clock.now(),
            contact=contact,
            consent_history=consent_history(user_id, contact_id),
            activity=list(db.session.scalars(sa.select(ContactActivity).where(ContactActivity.contact_id == contact_id)
                                             .order_by(ContactActivity.occurred_at))),
            messages=list(db.session.execute(
                sa.select(Delivery, Campaign.name).join(Campaign, Campaign.id == Delivery.campaign_id)
                .where(Delivery.contact_id == contact_id).order_by(Delivery.created_at))),
            attributions=list(db.session.scalars(sa.select(Attribution).where(Attribution.contact_id == contact_id)
                                                 .order_by(Attribution.occurred_at))),
            suppressions=list(db.session.scalars(sa.select(Suppression).where(
                Suppression.user_id == user_id, Suppression.address_hash.in_(hashes)))),
        )
    return found


def _addresses(contact: Contact) -> list[str]:
    return [a for a in (contact.email and contact.email.strip().lower(), contact.phone) if a]


def erase(user_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    """Forget the person (see the module's docstring). One transaction: all of it or none."""
    with transaction():
        declare("erasure")
        contact = get_contact(user_id, contact_id, lock=True)
        identifiers = _identifiers(contact)
        entries = [("email", a, ERASED_REASON) for a in [contact.email and contact.email.strip().lower()] if a]
        entries += [("phone", contact.phone, ERASED_REASON)] if contact.phone else []
        suppressions.add_entries(user_id, entries)
        db.session.execute(sa.update(Suppression).where(
            Suppression.user_id == user_id,
            Suppression.address_hash.in_([suppressions.address_hash(a) for a in _addresses(contact)]))
            .values(address=None))
        _redact_events(user_id, contact_id, identifiers)
        theirs = sa.select(Delivery.id).where(Delivery.contact_id == contact_id)
        for identifier in identifiers:
            db.session.execute(sa.update(Delivery).where(Delivery.contact_id == contact_id,
                                                         Delivery.error.contains(identifier))
                               .values(error=sa.func.replace(Delivery.error, identifier, ERASED)))
            db.session.execute(sa.update(BounceEvent).where(BounceEvent.delivery_id.in_(theirs),
                                                            BounceEvent.diagnostic.contains(identifier))
                               .values(diagnostic=sa.func.replace(BounceEvent.diagnostic, identifier, ERASED)))
        # Bounce mail kept for inspection that names them goes (whole messages, not theirs to keep).
        for identifier in identifiers:
            db.session.execute(_DROP_BOUNCE_MAIL, {"identifier": identifier})
        db.session.execute(sa.update(Delivery).where(Delivery.contact_id == contact_id)
                           .values(address=None, meta={}, updated_at=sa.func.now()))
        db.session.execute(sa.delete(Contact).where(Contact.id == contact_id))


def _identifiers(contact: Contact) -> list[str]:
    """Every string that names the person in data Herald received about them."""
    found: set[str] = set()
    if contact.email:
        email = contact.email.strip()
        found |= {email, email.lower(), suppressions.address_hash(email.lower())}
    if contact.phone:
        found |= {contact.phone, contact.phone.lstrip("+"), sha256_phone(contact.phone),
                  suppressions.address_hash(contact.phone)}
    found |= {str(value) for value in contact.external_ids.values() if value}
    # Longest first: a phone number without its `+` is inside the one with it.
    return sorted(found, key=len, reverse=True)


def _redact_events(user_id: uuid.UUID, contact_id: uuid.UUID, identifiers: list[str]) -> None:
    """The raw events tied to the contact, and any other of the merchant's events naming them by a
    long identifier (an address or a hash; a short provider id is only matched whole, in the
    events tied to them)."""
    if not identifiers:
        return
    contained = [i.lower() for i in identifiers if len(i) >= CONTAINED_MIN]
    exact = {i.lower() for i in identifiers}
    linked = sa.select(ContactActivity.data_event_id).where(ContactActivity.contact_id == contact_id)
    naming = [sa.cast(DataEvent.event_data, sa.Text).ilike(f"%{_escaped(i)}%") for i in contained]
    events = db.session.execute(
        sa.select(DataEvent.id, DataEvent.event_data).join(DataSource, DataSource.id == DataEvent.data_source_id)
        .where(DataSource.user_id == user_id, sa.or_(DataEvent.id.in_(linked), *naming))
        .with_for_update(of=DataEvent)).all()
    bulk_sql.update_rows(db.session, DataEvent.__table__, [
        {"id": event_id, "eventData": _scrubbed(data, contained, exact)} for event_id, data in events], touch=None)
    for identifier in identifiers:
        db.session.execute(sa.update(EventFailure).where(
            EventFailure.data_event_id.in_([event_id for event_id, _ in events]),
            EventFailure.last_error.contains(identifier))
            .values(last_error=sa.func.replace(EventFailure.last_error, identifier, ERASED)))


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _scrubbed(value: Any, contained: list[str], exact: set[str]) -> Any:
    """`value` with every string holding a long identifier (in any letter case), and every string
    or number equal to any identifier, replaced."""
    if isinstance(value, dict):
        return {key: _scrubbed(item, contained, exact) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, contained, exact) for item in value]
    if isinstance(value, str):
        lowered = value.lower()
        return ERASED if lowered in exact or any(i in lowered for i in contained) else value
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in exact:
        return ERASED
    return value
