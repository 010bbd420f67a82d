"""The keys that identify a contact, and keeping `contact_identities` in step with a contact."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.errors import Conflict
from app.extensions import db
from app.models import ContactIdentity
from app.models.contacts import IDENTITY_KINDS
from app.sources.normalize import EXTERNAL_ID_KEYS, sha256_email, sha256_phone

IdentityKey = tuple[str, str]  # (kind, value)


def identity_keys(email: str | None, phone: str | None, external_ids: Mapping[str, str] | None = None,
                  email_sha256: str | None = None, phone_sha256: str | None = None) -> set[IdentityKey]:
    """Every key under which this contact can be found. Emails are compared lower-cased; the Meta
    hashes let events that carry only a hash find the contact."""
    keys: set[IdentityKey] = set()
    if email:
        keys |= {("email", email.lower()), ("email_sha256", sha256_email(email))}
    if phone:
        keys |= {("phone", phone), ("phone_sha256", sha256_phone(phone))}
    if email_sha256:
        keys.add(("email_sha256", email_sha256))
    if phone_sha256:
        keys.add(("phone_sha256", phone_sha256))
    for kind, value in (external_ids or {}).items():
        if kind in EXTERNAL_ID_KEYS and value:
            keys.add((kind, str(value)))
    assert all(kind in IDENTITY_KINDS for kind, _ in keys)
    return keys


def replace_identities(user_id: uuid.UUID, contact_id: uuid.UUID, keys: Iterable[IdentityKey]) -> None:
    """Make the contact's identity rows exactly `keys`; a key held by another contact is a 409."""
    keys = set(keys)
    existing = {
        (row.kind, row.value)
        for row in db.session.execute(
            sa.select(ContactIdentity.kind, ContactIdentity.value).where(ContactIdentity.contact_id == contact_id)
        )
    }
    stale = existing - keys
    if stale:
        db.session.execute(
            sa.delete(ContactIdentity).where(
                ContactIdentity.contact_id == contact_id,
                sa.tuple_(ContactIdentity.kind, ContactIdentity.value).in_(list(stale)),
            )
        )
    add_identities(user_id, contact_id, keys - existing)


def add_identities(user_id: uuid.UUID, contact_id: uuid.UUID, keys: Iterable[IdentityKey]) -> None:
    rows = [{"userId": user_id, "kind": kind, "value": value, "contactId": contact_id} for kind, value in keys]
    if not rows:
        return
    inserted = db.session.execute(
        pg_insert(ContactIdentity.__table__).values(rows).on_conflict_do_nothing().returning(ContactIdentity.kind)
    ).all()
    if len(inserted) != len(rows):
        raise Conflict("Another contact already has this email, phone or external id.")
