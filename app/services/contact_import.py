"""Contact imports: upsert a merchant's list and report the rows that failed.

Rows are validated exactly like a created contact. The contacts they can match, and the identity
keys and push endpoints they would claim, are loaded in a few set-based queries; each row is then
resolved in memory — matched by email (any case), then phone, checked against every key another
contact holds, and applied or reported — so a bad row is never written at all, and the good ones
go out in one flush. The unique indexes and `replace_identities` still guard against a concurrent
writer: if one wins a key meanwhile, the whole import answers 409 and writes nothing.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy import orm

from app.errors import Conflict, HeraldError
from app.extensions import db
from app.models import Contact, ContactIdentity, PushSubscription
from app.schemas.contacts import ContactCreateSchema
from app.services import contacts, suppressions
from app.services.consent import declare
from app.services.contact_identity import IdentityKey, identity_keys

MAX_IMPORT_ROWS = 10_000
# The keys a row is matched by, strongest first. The hashes find contacts that events created from
# a hashed address only, which an import must update rather than collide with.
MATCH_ORDER = ("email", "email_sha256", "phone", "phone_sha256")


class TooManyRows(HeraldError):
    status, code = 413, "request_entity_too_large"


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def fail(self, row: int, errors: Any) -> None:
        self.errors.append({"row": row, "errors": errors})


def import_contacts(user_id: uuid.UUID, rows: Sequence[Any]) -> ImportResult:
    """Upsert `rows` (contact objects in the create shape, unvalidated) for the merchant.

    Existing contacts get the given profile fields overwritten, attributes, external ids and push
    subscriptions added to, and consent merged as the merchant's word, which never overrides a
    contact's own unsubscribe. New contacts start `subscribed` on every channel they have an
    address for, unless the row says otherwise. Row numbers in errors count from 1.
    """
    if len(rows) > MAX_IMPORT_ROWS:
        raise TooManyRows(f"An import holds at most {MAX_IMPORT_ROWS} rows; split the file.")
    result = ImportResult()
    valid = _validate(rows, result)
    try:
        declare("import")
        plan = _ImportPlan(user_id, [data for _, data in valid])
        for number, data in valid:
            _apply_row(plan, number, data, result)
        plan.write()
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()
    result.errors.sort(key=lambda error: error["row"])
    return result


def _apply_row(plan: _ImportPlan, number: int, data: Mapping[str, Any], result: ImportResult) -> None:
    try:
        created = plan.apply(data)
    except HeraldError as exc:
        result.fail(number, exc.errors or {"_schema": [exc.message]})
        return
    if created:
        result.created += 1
    else:
        result.updated += 1


def _validate(rows: Sequence[Any], result: ImportResult) -> list[tuple[int, dict[str, Any]]]:
    schema = ContactCreateSchema()
    valid = []
    for number, row in enumerate(rows, 1):
        try:
            valid.append((number, schema.load(row)))
        except ValidationError as exc:
            result.fail(number, exc.messages)
    return valid


def _match_keys(email: str | None, phone: str | None) -> list[IdentityKey]:
    return sorted(identity_keys(email, phone), key=lambda key: MATCH_ORDER.index(key[0]))


class _ImportPlan:
    """The import resolved in memory: who owns each key the rows mention, kept current row by row."""

    def __init__(self, user_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
        self.user_id = user_id
        wanted = {key for row in rows
                  for key in identity_keys(row.get("email"), row.get("phone"), row.get("external_ids"))}
        self.owner = _identity_owners(user_id, wanted)
        self.keys_of: dict[uuid.UUID, set[IdentityKey]] = defaultdict(set)
        for key, owner in self.owner.items():
            self.keys_of[owner].add(key)
        self.endpoint_owner = _endpoint_owners({item["endpoint"] for row in rows
                                                for item in row.get("push_subscriptions", [])})
        self.contacts = _lock_contacts({owner for key, owner in self.owner.items() if key[0] in MATCH_ORDER})
        self.touched: dict[uuid.UUID, Contact] = {}

    def apply(self, data: Mapping[str, Any]) -> bool:
        """Apply one row; True when it creates a contact. Raises, having changed nothing, if it can't."""
        contact = self._match(data)
        target = contact or contacts.new_contact(self.user_id)
        self._check_free(target, data)
        contacts.apply_fields(target, data, merge=True)
        contacts.settle_consent(target)
        if contact is None:
            db.session.add(target)
            self.contacts[target.id] = target
        self.touched[target.id] = target
        released = self._claim(target)
        if released and contact is not None:
            # Write the release now, so a later row's contact can take the key in any write order.
            contacts.flush_contacts()
            contacts.sync_identities(target)
        return contact is None

    def _match(self, data: Mapping[str, Any]) -> Contact | None:
        for key in _match_keys(data.get("email"), data.get("phone")):
            if self.owner.get(key) in self.contacts:
                return self.contacts[self.owner[key]]
        return None

    def _check_free(self, target: Contact, data: Mapping[str, Any]) -> None:
        # The contact as this row would leave it (apply_fields' merge rules), against every owner.
        keys = identity_keys(data.get("email", target.email), data.get("phone", target.phone),
                             contacts.combined(target.external_ids, data.get("external_ids"), merge=True))
        errors = contacts.conflict_errors(kind for kind, value in keys
                                          if self.owner.get((kind, value), target.id) != target.id)
        endpoints = [item["endpoint"] for item in data.get("push_subscriptions", [])]
        if any(self.endpoint_owner.get(endpoint, target.id) != target.id for endpoint in endpoints):
            errors["pushSubscriptions"] = [contacts.TAKEN_ENDPOINT]
        if errors:
            raise Conflict("Another contact already has this email, phone, external id or push subscription.",
                           errors=errors)

    def _claim(self, contact: Contact) -> set[IdentityKey]:
        """Record the contact's keys and endpoints as written; returns the keys it gave up."""
        keys = identity_keys(contact.email, contact.phone, contact.external_ids)
        released = self.keys_of[contact.id] - keys
        for key in released:
            del self.owner[key]
        self.owner.update(dict.fromkeys(keys, contact.id))
        self.keys_of[contact.id] = keys
        self.endpoint_owner.update(dict.fromkeys((s.endpoint for s in contact.push_subscriptions), contact.id))
        return released

    def write(self) -> None:
        contacts.flush_contacts()
        for contact in self.touched.values():
            contacts.sync_identities(contact)
        suppressions.hold_consent(self.user_id, list(self.touched))


def _identity_owners(user_id: uuid.UUID, keys: set[IdentityKey]) -> dict[IdentityKey, uuid.UUID]:
    if not keys:
        return {}
    kinds, values = zip(*keys)
    wanted = sa.select(sa.func.unnest(sa.cast(list(kinds), sa.ARRAY(sa.String))).label("kind"),
                       sa.func.unnest(sa.cast(list(values), sa.ARRAY(sa.String))).label("value")).subquery()
    rows = db.session.execute(
        sa.select(ContactIdentity.kind, ContactIdentity.value, ContactIdentity.contact_id)
        .join(wanted, sa.and_(ContactIdentity.kind == wanted.c.kind, ContactIdentity.value == wanted.c.value))
        .where(ContactIdentity.user_id == user_id)
    )
    return {(row.kind, row.value): row.contact_id for row in rows}


def _endpoint_owners(endpoints: set[str]) -> dict[str, uuid.UUID]:
    # Endpoints are unique across every merchant, so any owner counts.
    if not endpoints:
        return {}
    rows = db.session.execute(sa.select(PushSubscription.endpoint, PushSubscription.contact_id)
                              .where(PushSubscription.endpoint.in_(endpoints)))
    return {row.endpoint: row.contact_id for row in rows}


def _lock_contacts(contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Contact]:
    """The contacts rows can match, locked in id order (two imports cannot deadlock on them)."""
    ids = sorted(contact_ids)
    if not ids:
        return {}
    found = db.session.scalars(
        sa.select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id)
        .options(orm.selectinload(Contact.push_subscriptions)).with_for_update(of=Contact)
    )
    return {contact.id: contact for contact in found}
