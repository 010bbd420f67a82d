"""Contacts as the merchant manages them: list and search, create, update, delete, unsubscribe.

Every write keeps three things in step in one transaction: the contact row, its push subscriptions
and its `contact_identities` rows. Consent rules live in `app.services.consent`; this module only
says who is speaking (the merchant, or the contact through the merchant).
"""
from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.exc import IntegrityError

from app.channels import catalogue
from app.channels.catalogue import CHANNEL_TYPES
from app.errors import Conflict, NotFound, ValidationFailed
from app.extensions import db
from app.models import Contact, ContactIdentity, ContactTimezone, PushSubscription
from app.models.contacts import ZONE_SET_BY_MERCHANT
from app.services import suppressions, webhook_events
from app.services.consent import (
    addressable_channels,
    declare,
    merge_consent,
    with_default_consent,
)
from app.services.contact_identity import identity_keys, replace_identities
from app.services.transactions import transaction

MERCHANT = "merchant"
CONTACT = "contact"
UNSUBSCRIBED = "unsubscribed"
MAX_ATTRIBUTES = 100
PROFILE_FIELDS = ("email", "phone", "first_name", "last_name")
NEEDS_ADDRESS = "A contact needs an email address or a phone number."
TAKEN_ENDPOINT = "This push subscription belongs to another contact."

# Unique indexes that can refuse a write → the input field that caused it.
_CONFLICTS = {
    "uq_contacts_user_email": ("email", "Another contact already has this email address."),
    "uq_contacts_user_phone": ("phone", "Another contact already has this phone number."),
    "uq_contact_push_subscriptions_endpoint": ("pushSubscriptions", TAKEN_ENDPOINT),
}
_IDENTITY_FIELDS = {"email": "email", "email_sha256": "email", "phone": "phone", "phone_sha256": "phone"}


def contacts_query(user_id: uuid.UUID, *, email: str | None = None, phone: str | None = None,
                   q: str | None = None, consent: Mapping[str, str] | None = None) -> sa.Select[Contact]:
    """The merchant's contacts, newest first, narrowed by the given filters (for SelectPage)."""
    stmt = sa.select(Contact).where(Contact.user_id == user_id)
    if email:
        stmt = stmt.where(sa.func.lower(Contact.email) == email.lower())
    if phone:
        stmt = stmt.where(Contact.phone == phone)
    if q:
        columns = (Contact.email, Contact.phone, Contact.first_name, Contact.last_name)
        stmt = stmt.where(sa.or_(*(column.icontains(q, autoescape=True) for column in columns)))
    for channel, value in (consent or {}).items():
        stmt = stmt.where(Contact.consent[channel].astext == value)
    return stmt.options(orm.selectinload(Contact.push_subscriptions), orm.selectinload(Contact.own_timezone),
                        orm.undefer(Contact.merchant_timezone)).order_by(
        Contact.created_at.desc(), Contact.id.desc()
    )


def get_contact(user_id: uuid.UUID, contact_id: uuid.UUID, *, lock: bool = False) -> Contact:
    """One of the merchant's contacts; another merchant's answers exactly like a missing one."""
    stmt = sa.select(Contact).where(Contact.id == contact_id, Contact.user_id == user_id)
    contact = db.session.scalar(stmt.with_for_update() if lock else stmt)
    if contact is None:
        raise NotFound("Contact not found.")
    return contact


def create_contact(user_id: uuid.UUID, data: Mapping[str, Any]) -> Contact:
    """A new contact; channels with an address and no stated consent start `subscribed`."""
    with transaction():
        declare("api")
        contact = new_contact(user_id)
        apply_fields(contact, data, merge=False)
        db.session.add(contact)
        store_contact(contact)
    return contact


def update_contact(user_id: uuid.UUID, contact_id: uuid.UUID, changes: Mapping[str, Any]) -> Contact:
    """PATCH: given fields replace the old ones (attributes, externalIds and pushSubscriptions whole);
    consent is merged per channel as the merchant's word, so the contact's own opt-out stands."""
    with transaction():
        declare("api")
        contact = get_contact(user_id, contact_id, lock=True)
        apply_fields(contact, changes, merge=False)
        if {"email", "phone"} & changes.keys() and not (contact.email or contact.phone):
            raise ValidationFailed(NEEDS_ADDRESS, errors={"email": [NEEDS_ADDRESS], "phone": [NEEDS_ADDRESS]})
        store_contact(contact)
    return contact


def delete_contact(user_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    """Delete the contact; its identities, push subscriptions and activity go with it (FK cascade)."""
    with transaction():
        deleted = db.session.scalar(
            sa.delete(Contact).where(Contact.id == contact_id, Contact.user_id == user_id).returning(Contact.id)
        )
        if deleted is None:
            raise NotFound("Contact not found.")


def unsubscribe(user_id: uuid.UUID, contact_id: uuid.UUID, channels: Collection[str] | None = None) -> Contact:
    """Record the contact's opt-out from `channels` (all when None).

    The merchant relays the contact's own wish here (a reply, a call, a letter), so it is recorded
    with source `contact`, not `merchant`: no later import, PATCH or sync can resubscribe them.
    """
    with transaction():
        declare("api")
        contact = get_contact(user_id, contact_id, lock=True)
        _merge_opt_out(contact, CHANNEL_TYPES if channels is None else channels, CONTACT)
    return contact


def record_opt_out(contact_id: uuid.UUID, channels: Collection[str], source: str, value: str = UNSUBSCRIBED) -> None:
    """An opt-out the contact made (an unsubscribe link: source `contact`) or a provider reported
    (a carrier STOP: `unsubscribed`; a hard bounce: `bounced`; a complaint: `complained`; source
    `provider`). The caller commits. A deleted contact: nothing."""
    if source == "provider":
        declare("provider")
    # Locked: a merchant's edit committing in between must not write back the old consent.
    contact = db.session.scalar(sa.select(Contact).where(Contact.id == contact_id).with_for_update())
    if contact is not None:
        _merge_opt_out(contact, channels, source, value)


def remove_gone_addresses(channel_type: str, addresses: Collection[str]) -> None:
    """Forget addresses a provider said are gone for good, so nothing is sent to them again: for
    push, the browser subscriptions its push service answered 404/410 for. The caller commits."""
    if catalogue.spec(channel_type).address != "push":
        raise ValueError(f"{channel_type} has no addresses a provider can call gone")
    db.session.execute(sa.delete(PushSubscription).where(PushSubscription.id.in_([uuid.UUID(a) for a in addresses])))


def _merge_opt_out(contact: Contact, channels: Collection[str], source: str, value: str = UNSUBSCRIBED) -> None:
    wish = dict.fromkeys(channels, value)
    before = contact.consent
    contact.consent, contact.consent_sources = merge_consent(contact.consent, contact.consent_sources, wish, source)
    opted_out = [c for c in channels if contact.consent.get(c) == UNSUBSCRIBED != before.get(c)]
    if opted_out:
        webhook_events.emit(contact.user_id, "contact.unsubscribed",
                            {"contactId": contact.id, "channels": opted_out, "source": source})


# --- Shared with imports ----------------------------------------------------------------------

def new_contact(user_id: uuid.UUID) -> Contact:
    """A blank contact, not yet in the session (the caller adds it once its input applied)."""
    return Contact(id=uuid.uuid4(), user_id=user_id, attributes={}, external_ids={}, consent={},
                   consent_sources={}, push_subscriptions=[])


def apply_fields(contact: Contact, data: Mapping[str, Any], *, merge: bool) -> None:
    """Write validated input onto the contact, or raise ValidationFailed having changed nothing.

    With `merge` (imports), attributes, external ids and push subscriptions are added to; without
    it, a given object or list replaces the old one. Consent is merged as the merchant's word.
    """
    attributes = combined(contact.attributes, data.get("attributes"), merge=merge)
    if len(attributes) > MAX_ATTRIBUTES:
        message = f"A contact has at most {MAX_ATTRIBUTES} attributes."
        raise ValidationFailed(message, errors={"attributes": [message]})
    # Nothing may flush half-applied input: `flush_contacts` flushes once and names the conflict.
    with db.session.no_autoflush:
        for name in PROFILE_FIELDS:
            if name in data:
                setattr(contact, name, data[name])
        contact.attributes = attributes
        contact.external_ids = combined(contact.external_ids, data.get("external_ids"), merge=merge)
        if "push_subscriptions" in data:
            _set_push_subscriptions(contact, data["push_subscriptions"], keep_others=merge)
        if "timezone" in data:
            _set_timezone(contact, data["timezone"])
        if "consent" in data:
            contact.consent, contact.consent_sources = merge_consent(
                contact.consent, contact.consent_sources, data["consent"], source=MERCHANT
            )


def _set_timezone(contact: Contact, zone: str | None) -> None:
    """The merchant's zone for the contact; None takes theirs back, leaving a derived one in place."""
    stored = contact.own_timezone
    if zone is None:
        if stored is not None and stored.source == ZONE_SET_BY_MERCHANT:
            contact.own_timezone = None
    elif stored is None:
        contact.own_timezone = ContactTimezone(timezone=zone, source=ZONE_SET_BY_MERCHANT)
    else:
        stored.timezone, stored.source = zone, ZONE_SET_BY_MERCHANT


def combined(current: dict[str, Any], given: Mapping[str, Any] | None, *, merge: bool) -> dict[str, Any]:
    """A JSON object field after input: unchanged, added to, or replaced (always a new dict, since
    JSONB columns do not track in-place changes)."""
    if given is None:
        return current
    return {**current, **given} if merge else dict(given)


def _set_push_subscriptions(contact: Contact, subscriptions: list[Mapping[str, str]], *,
                            keep_others: bool) -> None:
    # A subscription given again keeps its row: deleting and re-inserting the same endpoint in one
    # flush would trip its unique index (the ORM inserts before it deletes).
    current = {subscription.endpoint: subscription for subscription in contact.push_subscriptions}
    given = []
    for item in subscriptions:
        subscription = current.pop(item["endpoint"], None) or PushSubscription(endpoint=item["endpoint"])
        subscription.p256dh, subscription.auth = item["p256dh"], item["auth"]
        given.append(subscription)
    contact.push_subscriptions = (list(current.values()) if keep_others else []) + given


def settle_consent(contact: Contact) -> None:
    """Channels the contact can now be reached on, with no stated consent, become `subscribed`."""
    with db.session.no_autoflush:
        channels = addressable_channels(contact.email, contact.phone, bool(contact.push_subscriptions))
    contact.consent, contact.consent_sources = with_default_consent(
        contact.consent, contact.consent_sources, channels, source=MERCHANT
    )


def store_contact(contact: Contact) -> None:
    """Settle consent, flush, and make the identity rows match; the caller commits or rolls back.
    A suppressed address keeps its channels' consent held off (app.services.suppressions)."""
    settle_consent(contact)
    flush_contacts()
    sync_identities(contact)
    if suppressions.hold_consent(contact.user_id, [contact.id]):
        db.session.refresh(contact, ["consent", "consent_sources"])


def flush_contacts() -> None:
    """Flush; an email, phone or push endpoint another contact holds is a Conflict naming the field."""
    try:
        db.session.flush()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        if constraint not in _CONFLICTS:
            raise
        field, message = _CONFLICTS[constraint]
        raise Conflict(message, errors={field: [message]}) from None


def sync_identities(contact: Contact) -> None:
    """Make the contact's `contact_identities` rows its current keys (Conflict if another holds one)."""
    keys = identity_keys(contact.email, contact.phone, contact.external_ids)
    try:
        replace_identities(contact.user_id, contact.id, keys)
    except Conflict as exc:
        kinds = db.session.scalars(
            sa.select(ContactIdentity.kind).where(
                ContactIdentity.user_id == contact.user_id,
                ContactIdentity.contact_id != contact.id,
                sa.tuple_(ContactIdentity.kind, ContactIdentity.value).in_(list(keys)),
            )
        )
        raise Conflict(exc.message, errors=conflict_errors(kinds) or None) from None


def conflict_errors(kinds: Iterable[str]) -> dict[str, Any]:
    """Field errors for identity kinds that another contact already holds."""
    errors: dict[str, Any] = {}
    for kind in kinds:
        if kind in _IDENTITY_FIELDS:
            errors[_IDENTITY_FIELDS[kind]] = ["Another contact already has this value."]
        else:
            errors.setdefault("externalIds", {})[kind] = ["Another contact already has this id."]
    return errors
