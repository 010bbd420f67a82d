"""Identity resolution for a batch of events of one merchant: which contact each event belongs to.

A batch whose events all name known contacts and tell them nothing new (the events of known
customers) is resolved inside PostgreSQL by one statement (unchanged_owners). Otherwise
(BatchResolver, under the merchant's lock) every identity key of the batch is looked up with one
query (key → contact id), and only the contacts that some event may change are then read, with a
second; an event that changes nothing is resolved from the first alone. The rest is decided in
memory on plain records and written back set-based (new contacts, changed contacts, claimed keys:
one statement each). An event whose keys point at several contacts merges them into the one its
strongest key names — unless they hold different emails or phones, which are different people
sharing a weaker key (a family computer's GA4 client id).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import orm

from app.extensions import db
from app.models import Attribution, Contact, ContactActivity, ContactIdentity, FlowEnrollment, PushSubscription
from app.services import bulk_sql, suppressions
from app.services.consent import (
    AUTHORITATIVE_SOURCES,
    addressable_channels,
    merge_consent,
    with_default_consent,
)
from app.services.contact_identity import IdentityKey, identity_keys
from app.services.prepared_statements import PreparedStatement
from app.sources.normalize import Identity

# Strongest first: the key that decides which contact survives a merge.
KEY_PRIORITY = (
    "email", "phone", "shopifyCustomerId", "metaExternalId", "ga4UserId", "email_sha256", "phone_sha256",
    "ga4ClientId",
)
SOURCE = "source"
# The owner of each of the batch's keys that has one.
_OWNERS = sa.text(
    """
    SELECT ci.kind, ci.value, ci."contactId"
    FROM unnest(CAST(:kinds AS text[]), CAST(:vals AS text[])) AS k(kind, value)
    JOIN contact_identities ci ON ci."userId" = CAST(:user_id AS uuid) AND ci.kind = k.kind AND ci.value = k.value
    """
)
_CONTACTS = sa.text(
    """
    SELECT id, email, phone, "firstName", "lastName", attributes, "externalIds", consent, "consentSources"
    FROM contacts WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)


@dataclass
class ContactRecord:
    id: uuid.UUID
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)
    consent_sources: dict[str, str] = field(default_factory=dict)
    is_new: bool = False
    dirty: bool = False

    def set(self, **changes: Any) -> None:
        for name, value in changes.items():
            if getattr(self, name) != value:
                setattr(self, name, value)
                self.dirty = True

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "phone": self.phone, "firstName": self.first_name,
                "lastName": self.last_name, "attributes": self.attributes, "externalIds": self.external_ids,
                "consent": self.consent, "consentSources": self.consent_sources}


def _strongest_first(keys: Iterable[IdentityKey]) -> list[IdentityKey]:
    return sorted(keys, key=lambda key: (KEY_PRIORITY.index(key[0]), key[1]))


def unchanged_owners(session: orm.Session, user_id: uuid.UUID,
                     events: list[tuple[Identity, dict[str, str]]]) -> list[str | None] | None:
    """Each event's contact, when no event of the batch changes anything: all its keys known and
    owned by one contact, no profile, no consent — the events of known customers. Decided inside
    PostgreSQL by one statement, without the merchant's lock; the ids as text, as the batch passes
    them on (in JSON). None when some event creates, merges or changes a contact (BatchResolver,
    under the lock, decides those). A contact merged away meanwhile fails the batch's activity
    insert (its foreign key), and the merge itself waits for a batch that is writing rows for it
    (BatchResolver._merge), so nothing is left on a deleted contact."""
    if not all(_tells_nothing(identity, consent) for identity, consent in events):
        return None
    keyed = [sorted(identity.keys) for identity, _ in events]
    named = [keys for keys in keyed if keys]
    if not named:
        return [None] * len(events)
    found = _SOLE_OWNERS.execute_in(session, db.engine, {"events": orjson.dumps(named).decode(),
                                                         "user_id": str(user_id)}).scalar()
    owners = found.split(",")
    if "-" in owners:
        return None
    resolved = iter(owners)
    return [next(resolved) if keys else None for keys in keyed]


# Per event (its keys as [kind, value] pairs, in order), the one contact that owns every key, or `-`.
_SOLE_OWNERS = PreparedStatement("herald_sole_owners", sa.text(
    """
    WITH key AS (
        SELECT e.n, k ->> 0 AS kind, k ->> 1 AS value
        FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(keys, n),
             jsonb_array_elements(e.keys) AS k
    ), owner AS (
        SELECT key.n, count(*) = count(ci."contactId") AND min(ci."contactId"::text) = max(ci."contactId"::text)
                   AS sole, min(ci."contactId"::text) AS contact
        FROM key LEFT JOIN contact_identities AS ci
          ON ci."userId" = CAST(:user_id AS uuid) AND ci.kind = key.kind AND ci.value = key.value
        GROUP BY key.n
    )
    SELECT string_agg(CASE WHEN sole THEN contact ELSE '-' END, ',' ORDER BY n) FROM owner
    """
))


def _load_owners(session: orm.Session, user_id: uuid.UUID, keys: set[IdentityKey],
                 owner: dict[IdentityKey, uuid.UUID]) -> None:
    if not keys:
        return
    kinds, values = zip(*keys)
    params = {"kinds": list(kinds), "vals": list(values), "user_id": str(user_id)}
    owner.update({(kind, value): contact for kind, value, contact in session.execute(_OWNERS, params)})


def _tells_nothing(identity: Identity, consent: dict[str, str]) -> bool:
    """No profile and no consent: nothing to write on the contact the event belongs to."""
    return not consent and not identity.profile


def _changes_nothing(owner: dict[IdentityKey, uuid.UUID], identity: Identity, keys: frozenset[IdentityKey],
                     consent: dict[str, str]) -> bool:
    """Every key known and owned by one contact, and nothing to tell them (_tells_nothing). Such an
    event is resolved without reading the contact."""
    if not keys or not _tells_nothing(identity, consent):
        return False
    owners = {owner.get(key) for key in keys}
    return len(owners) == 1 and None not in owners


class BatchResolver:
    def __init__(self, session: orm.Session, user_id: uuid.UUID,
                 events: Iterable[tuple[Identity, dict[str, str]]]) -> None:
        """`events`: each event's identity and the consent it states, as `resolve` will get them."""
        self.session = session
        self.user_id = user_id
        self.owner: dict[IdentityKey, uuid.UUID] = {}
        self.contacts: dict[uuid.UUID, ContactRecord] = {}
        self.merged_into: dict[uuid.UUID, uuid.UUID] = {}
        self.new_keys: list[tuple[IdentityKey, uuid.UUID]] = []
        keyed = [(identity, identity.keys, consent) for identity, consent in events]
        _load_owners(session, user_id, {key for _, keys, _ in keyed for key in keys}, self.owner)
        changing = [(identity, keys) for identity, keys, consent in keyed
                    if not _changes_nothing(self.owner, identity, keys, consent)]
        self._load_contacts({self.owner[key] for _, keys in changing for key in keys if key in self.owner})
        unknown = [identity for identity, keys in changing if not any(key in self.owner for key in keys)]
        self.erased = suppressions.erased_among(session, user_id, unknown)

    def _load_contacts(self, ids: set[uuid.UUID]) -> None:
        if ids:
            for row in self.session.execute(_CONTACTS, {"ids": [str(i) for i in ids]}):
                self.contacts[row.id] = ContactRecord(*row)

    def resolve(self, identity: Identity, consent: dict[str, str]) -> uuid.UUID | None:
        """The contact for this identity (found, merged or created), updated with what it says."""
        keys = identity.keys
        if not keys:
            return None
        owners = [self.final(self.owner[key]) for key in _strongest_first(keys) if key in self.owner]
        if owners and owners[0] not in self.contacts and _changes_nothing(self.owner, identity, keys, consent):
            return owners[0]  # nothing to change, and nobody merged into or out of it in this batch
        if owners:
            contact = self.contacts[owners[0]]
            for other in dict.fromkeys(owners[1:]):
                if other != contact.id and _compatible(contact, self.contacts[other]):
                    self._merge(self.contacts[other], into=contact)
        elif _hashes(identity) & self.erased:
            return None  # a person Herald was asked to forget: their events belong to no one
        else:
            contact = ContactRecord(id=uuid.uuid4(), is_new=True)
            self.contacts[contact.id] = contact
        self._apply(contact, identity, keys, consent)
        return contact.id

    def final(self, contact_id: uuid.UUID) -> uuid.UUID:
        while contact_id in self.merged_into:
            contact_id = self.merged_into[contact_id]
        return contact_id

    def _apply(self, contact: ContactRecord, identity: Identity, keys: frozenset[IdentityKey],
               consent: dict[str, str]) -> None:
        addresses = (contact.email, contact.phone)
        unknown = {key for key in keys if key not in self.owner}
        if unknown:  # most events of a known customer bring no new key: nothing to claim
            self._claim_keys(contact, identity, unknown)
        _apply_profile(contact, identity.profile)
        if consent or addresses != (contact.email, contact.phone) or contact.is_new:
            _apply_consent(contact, consent)

    def _claim_keys(self, contact: ContactRecord, identity: Identity, unknown: set[IdentityKey]) -> None:
        if identity.email and contact.email is None and ("email", identity.email) in unknown:
            contact.set(email=identity.email)
        if identity.phone and contact.phone is None and ("phone", identity.phone) in unknown:
            contact.set(phone=identity.phone)
        # An email or phone the contact does not hold is another person's: its keys are not claimed.
        claimed = {key for key in unknown if _claimable(contact, key)}
        external = {kind: value for kind, value in claimed if kind in identity.external_ids}
        if external.keys() - contact.external_ids.keys():
            contact.set(external_ids={**external, **contact.external_ids})
        for key in claimed:
            self.owner[key] = contact.id
            self.new_keys.append((key, contact.id))

    def _merge(self, loser: ContactRecord, into: ContactRecord) -> None:
        """Fold `loser` into `into`: its identities, activity, push subscriptions, flow enrolments
        and the orders credited to messages it got move over."""
        if not loser.is_new:
            self._insert_new([into])  # rows are about to point at it
            # A batch writing rows for the loser holds its key share until it commits: wait for it,
            # so that what it wrote is moved too rather than lost with the loser.
            self.session.execute(sa.select(Contact.id).where(Contact.id == loser.id).with_for_update())
            for model in (ContactIdentity, ContactActivity, PushSubscription, Attribution, FlowEnrollment):
                self.session.execute(sa.update(model).where(model.contact_id == loser.id).values(contact_id=into.id))
            self.session.execute(sa.delete(Contact).where(Contact.id == loser.id))
        into.set(email=into.email or loser.email, phone=into.phone or loser.phone,
                 first_name=into.first_name or loser.first_name, last_name=into.last_name or loser.last_name,
                 attributes={**loser.attributes, **into.attributes},
                 external_ids={**loser.external_ids, **into.external_ids})
        for channel, value in loser.consent.items():
            source = loser.consent_sources.get(channel, SOURCE)
            if channel not in into.consent or source in AUTHORITATIVE_SOURCES:
                consent, sources = merge_consent(into.consent, into.consent_sources, {channel: value}, source)
                into.set(consent=consent, consent_sources=sources)
        del self.contacts[loser.id]
        self.merged_into[loser.id] = into.id

    def _insert_new(self, records: list[ContactRecord]) -> None:
        fresh = [record for record in records if record.is_new]
        bulk_sql.insert_rows(self.session, Contact.__table__, [{**r.row(), "userId": self.user_id} for r in fresh])
        for record in fresh:
            record.is_new, record.dirty = False, False

    def write(self) -> None:
        """Store new and changed contacts, then the keys this batch claimed (a key claimed
        concurrently elsewhere keeps its owner)."""
        written = [record.id for record in self.contacts.values() if record.is_new or record.dirty]
        self._insert_new(list(self.contacts.values()))
        changed = [record.row() for record in self.contacts.values() if record.dirty]
        bulk_sql.update_rows(self.session, Contact.__table__, changed)
        rows = [{"userId": self.user_id, "kind": kind, "value": value, "contactId": self.final(owner)}
                for (kind, value), owner in self.new_keys]
        bulk_sql.insert_rows(self.session, ContactIdentity.__table__, rows, "ON CONFLICT DO NOTHING")
        self.new_keys = []
        suppressions.hold_consent(self.user_id, written, self.session)


def _hashes(identity: Identity) -> set[str]:
    return suppressions.identity_hashes(identity.email, identity.email_sha256, identity.phone)


def _apply_profile(contact: ContactRecord, profile: dict[str, str]) -> None:
    if profile.get("firstName"):
        contact.set(first_name=profile["firstName"])
    if profile.get("lastName"):
        contact.set(last_name=profile["lastName"])
    if profile.get("country") and contact.attributes.get("country") != profile["country"]:
        contact.set(attributes={**contact.attributes, "country": profile["country"]})


def _apply_consent(contact: ContactRecord, stated: dict[str, str]) -> None:
    consent, sources = merge_consent(contact.consent, contact.consent_sources, stated, SOURCE)
    channels = addressable_channels(contact.email, contact.phone, has_push=False)
    consent, sources = with_default_consent(consent, sources, channels, SOURCE)
    contact.set(consent=consent, consent_sources=sources)


def _compatible(a: ContactRecord, b: ContactRecord) -> bool:
    return (not a.email or not b.email or a.email.lower() == b.email.lower()) and (
        not a.phone or not b.phone or a.phone == b.phone)


def _claimable(contact: ContactRecord, key: IdentityKey) -> bool:
    """A key agrees with the contact's own email/phone (or the contact has none of that kind)."""
    kind = key[0]
    if kind in ("email", "email_sha256") and contact.email:
        return key in identity_keys(contact.email, None)
    if kind in ("phone", "phone_sha256") and contact.phone:
        return key in identity_keys(None, contact.phone)
    return True
