"""Identity resolution for a batch of events of one merchant: which contact each event belongs to.

Every identity key of the batch is looked up at once; the rest is decided in memory, so a batch of
hundreds of events costs a handful of statements. An event whose keys point at several contacts
merges them into the one its strongest key names — unless they hold different emails or phones,
which are different people sharing a weaker key (a family computer's GA4 client id).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.extensions import db
from app.models import Contact, ContactActivity, ContactIdentity, PushSubscription
from app.services.consent import AUTHORITATIVE_SOURCES, addressable_channels, merge_consent, with_default_consent
from app.services.contact_identity import IdentityKey, identity_keys
from app.sources.normalize import Identity

# Strongest first: the key that decides which contact survives a merge.
KEY_PRIORITY = (
    "email", "phone", "shopifyCustomerId", "metaExternalId", "ga4UserId", "email_sha256", "phone_sha256",
    "ga4ClientId",
)
SOURCE = "source"


def keys_of(identity: Identity) -> set[IdentityKey]:
    return identity_keys(identity.email, identity.phone, identity.external_ids,
                         identity.email_sha256, identity.phone_sha256)


def _strongest_first(keys: Iterable[IdentityKey]) -> list[IdentityKey]:
    return sorted(keys, key=lambda key: (KEY_PRIORITY.index(key[0]), key[1]))


class BatchResolver:
    def __init__(self, user_id: uuid.UUID, identities: Iterable[Identity]) -> None:
        self.user_id = user_id
        self.owner: dict[IdentityKey, uuid.UUID] = {}
        self.contacts: dict[uuid.UUID, Contact] = {}
        self.merged_into: dict[uuid.UUID, uuid.UUID] = {}
        self.new_keys: list[tuple[IdentityKey, uuid.UUID]] = []
        self._load({key for identity in identities for key in keys_of(identity)})

    def _load(self, keys: set[IdentityKey]) -> None:
        if not keys:
            return
        kinds, values = zip(*keys)
        pairs = sa.select(sa.func.unnest(sa.cast(list(kinds), sa.ARRAY(sa.String))).label("k"),
                          sa.func.unnest(sa.cast(list(values), sa.ARRAY(sa.String))).label("v")).subquery()
        rows = db.session.execute(
            sa.select(ContactIdentity.kind, ContactIdentity.value, ContactIdentity.contact_id)
            .join(pairs, sa.and_(ContactIdentity.kind == pairs.c.k, ContactIdentity.value == pairs.c.v))
            .where(ContactIdentity.user_id == self.user_id)
        ).all()
        self.owner = {(row.kind, row.value): row.contact_id for row in rows}
        found = set(self.owner.values())
        if found:
            for contact in db.session.scalars(sa.select(Contact).where(Contact.id.in_(found))):
                self.contacts[contact.id] = contact

    def resolve(self, identity: Identity, consent: dict[str, str]) -> uuid.UUID | None:
        """The contact for this identity (found, merged or created), updated with what it says."""
        keys = keys_of(identity)
        if not keys:
            return None
        owners = [self.final(self.owner[key]) for key in _strongest_first(keys) if key in self.owner]
        if owners:
            contact = self.contacts[owners[0]]
            for other in dict.fromkeys(owners[1:]):
                if other != contact.id and _compatible(contact, self.contacts[other]):
                    self._merge(self.contacts[other], into=contact)
        else:
            contact = self._create()
        self._apply(contact, identity, keys, consent)
        return contact.id

    def final(self, contact_id: uuid.UUID) -> uuid.UUID:
        while contact_id in self.merged_into:
            contact_id = self.merged_into[contact_id]
        return contact_id

    def _create(self) -> Contact:
        contact = Contact(id=uuid.uuid4(), user_id=self.user_id, attributes={}, external_ids={}, consent={},
                          consent_sources={})
        db.session.add(contact)
        self.contacts[contact.id] = contact
        return contact

    def _apply(self, contact: Contact, identity: Identity, keys: set[IdentityKey], consent: dict[str, str]) -> None:
        free = {key for key in keys if self.final(self.owner.get(key, contact.id)) == contact.id}
        if identity.email and contact.email is None and ("email", identity.email) in free:
            contact.email = identity.email
        if identity.phone and contact.phone is None and ("phone", identity.phone) in free:
            contact.phone = identity.phone
        # An email or phone the contact does not hold is another person's: its keys are not claimed.
        claimed = {key for key in free if _claimable(contact, key)}
        external = {kind: value for kind, value in claimed if kind in identity.external_ids}
        if any(contact.external_ids.get(kind) != value for kind, value in external.items()):
            contact.external_ids = {**external, **contact.external_ids}
        self._profile(contact, identity)
        self._consent(contact, consent)
        for key in claimed - self.owner.keys():
            self.owner[key] = contact.id
            self.new_keys.append((key, contact.id))

    @staticmethod
    def _profile(contact: Contact, identity: Identity) -> None:
        profile = identity.profile
        if profile.get("firstName") and contact.first_name != profile["firstName"]:
            contact.first_name = profile["firstName"]
        if profile.get("lastName") and contact.last_name != profile["lastName"]:
            contact.last_name = profile["lastName"]
        if profile.get("country") and contact.attributes.get("country") != profile["country"]:
            contact.attributes = {**contact.attributes, "country": profile["country"]}

    @staticmethod
    def _consent(contact: Contact, stated: dict[str, str]) -> None:
        consent, sources = merge_consent(contact.consent, contact.consent_sources, stated, SOURCE)
        channels = addressable_channels(contact.email, contact.phone, has_push=False)
        consent, sources = with_default_consent(consent, sources, channels, SOURCE)
        if consent != contact.consent or sources != contact.consent_sources:
            contact.consent, contact.consent_sources = consent, sources

    def _merge(self, loser: Contact, into: Contact) -> None:
        """Fold `loser` into `into`: its identities, activity and push subscriptions move over."""
        db.session.flush()
        for model in (ContactIdentity, ContactActivity, PushSubscription):
            db.session.execute(sa.update(model).where(model.contact_id == loser.id).values(contact_id=into.id))
        into.email = into.email or loser.email
        into.phone = into.phone or loser.phone
        into.first_name = into.first_name or loser.first_name
        into.last_name = into.last_name or loser.last_name
        into.attributes = {**loser.attributes, **into.attributes}
        into.external_ids = {**loser.external_ids, **into.external_ids}
        for channel, value in loser.consent.items():
            source = loser.consent_sources.get(channel, SOURCE)
            if channel not in into.consent or source in AUTHORITATIVE_SOURCES:
                into.consent, into.consent_sources = merge_consent(
                    into.consent, into.consent_sources, {channel: value}, source)
        db.session.delete(loser)
        self.merged_into[loser.id] = into.id
        self.new_keys = [(key, into.id if owner == loser.id else owner) for key, owner in self.new_keys]

    def write_identities(self) -> None:
        """Store the keys this batch claimed (a key claimed concurrently elsewhere keeps its owner)."""
        rows = [{"userId": self.user_id, "kind": kind, "value": value, "contactId": self.final(owner)}
                for (kind, value), owner in self.new_keys]
        if rows:
            db.session.execute(pg_insert(ContactIdentity.__table__).values(rows).on_conflict_do_nothing())
        self.new_keys = []


def _compatible(a: Contact, b: Contact) -> bool:
    return (not a.email or not b.email or a.email.lower() == b.email.lower()) and (
        not a.phone or not b.phone or a.phone == b.phone)


def _claimable(contact: Contact, key: IdentityKey) -> bool:
    """A key agrees with the contact's own email/phone (or the contact has none of that kind)."""
    kind = key[0]
    if kind in ("email", "email_sha256") and contact.email:
        return key in identity_keys(contact.email, None)
    if kind in ("phone", "phone_sha256") and contact.phone:
        return key in identity_keys(None, contact.phone)
    return True
