"""The suppression list: addresses a merchant must not send to, whoever holds them now or later.

An entry is an email address or a phone number (E.164) with why it is there: `bounced`,
`complained` (a provider's word), `unsubscribed`, `manual` (the merchant's), `erased` (the person
was forgotten: only the address's hash is kept). Every check compares SHA-256 hashes of the
normalized address, so an erased person's address still matches without being stored.

It holds in three places, each written once here:
- **the ledger**: a launch writes a suppressed address's row `skipped` (`suppressed`), and a claim
  skips a row whose address was suppressed since (`claim_suppressed`, inside the claim statement);
- **consent**: after any write of contacts (API, import, sync, event), a suppressed address's
  channels are held at the suppression's value (`bounced`, `complained`, else `unsubscribed`)
  with an authoritative source, so no import, sync or event can resubscribe it (`hold_consent`);
- the merchant removes an entry only on the person's own new opt-in (DELETE, documented).
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.channels import catalogue
from app.errors import NotFound, ValidationFailed
from app.extensions import db, rowcount
from app.models import Contact
from app.models.suppressions import ADDRESS_KINDS, Suppression
from app.services.consent import declare
from app.sources.normalize import normalize_email, normalize_phone

SUPPRESSED = "suppressed"  # the skip reason
IMPORT_MAX_ROWS = 100_000
# What a suppression makes the channels' consent, and who is taken to have said so.
CONSENT = {"bounced": ("bounced", "provider"), "complained": ("complained", "provider")}
DEFAULT_CONSENT = ("unsubscribed", "contact")


def address_hash(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def sql_hash(expression: Any) -> sa.ColumnElement[Any]:
    """The same hash, computed by PostgreSQL from a normalized address column."""
    return sa.func.encode(sa.func.sha256(sa.func.convert_to(expression, "UTF8")), "hex")


def normalized(kind: str, value: str) -> str | None:
    return normalize_email(value) if kind == "email" else normalize_phone(value)


def kind_for(channel_type: str) -> str | None:
    """The address kind a channel sends to, when it is one the list holds (push: none)."""
    kind = catalogue.spec(channel_type).address
    return kind if kind in ADDRESS_KINDS else None


def contact_address(kind: str) -> sa.ColumnElement[Any]:
    return sa.func.lower(Contact.email) if kind == "email" else Contact.phone.expression


def suppressed(user_id: Any, kind: str, address: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: the normalized `address` is on the merchant's list."""
    return sa.select(Suppression.id).where(Suppression.user_id == user_id, Suppression.kind == kind,
                                           Suppression.address_hash == sql_hash(address)).exists()


# --- Adding and removing ------------------------------------------------------------------------

def add_entries(user_id: uuid.UUID, entries: Iterable[tuple[str, str, str]]) -> int:
    """Put (kind, normalized address, reason) on the list, each once (an address already there keeps
    its first reason), and hold the consent of whoever has them. No commit. Entries added."""
    rows = [{"userId": user_id, "kind": kind, "address": address, "addressHash": address_hash(address),
             "reason": reason} for kind, address, reason in entries]
    if not rows:
        return 0
    added = rowcount(db.session.execute(pg_insert(Suppression).values(rows).on_conflict_do_nothing()))
    holders = db.session.scalars(sa.select(Contact.id).where(Contact.user_id == user_id, sa.or_(
        sa.func.lower(Contact.email).in_([r["address"] for r in rows if r["kind"] == "email"]),
        Contact.phone.in_([r["address"] for r in rows if r["kind"] == "phone"])))).all()
    hold_consent(user_id, holders)
    return added


def add(user_id: uuid.UUID, kind: str, value: str, reason: str) -> Suppression:
    address = normalized(kind, value)
    if address is None:
        raise ValidationFailed(f"Not a valid {kind}.", errors={"address": [f"Not a valid {kind}."]})
    add_entries(user_id, [(kind, address, reason)])
    db.session.commit()
    return db.session.scalars(sa.select(Suppression).where(
        Suppression.user_id == user_id, Suppression.kind == kind,
        Suppression.address_hash == address_hash(address))).one()


def remove(user_id: uuid.UUID, suppression_id: uuid.UUID) -> None:
    """Take an address off the list (on the person's own new opt-in). Their consent stays as it
    is: the person subscribes again themself."""
    deleted = db.session.scalar(sa.delete(Suppression).where(
        Suppression.id == suppression_id, Suppression.user_id == user_id).returning(Suppression.id))
    if deleted is None:
        raise NotFound("Suppression not found.")
    db.session.commit()


def suppressions_query(user_id: uuid.UUID, kind: str | None = None) -> sa.Select[Suppression]:
    stmt = sa.select(Suppression).where(Suppression.user_id == user_id)
    if kind is not None:
        stmt = stmt.where(Suppression.kind == kind)
    return stmt.order_by(Suppression.created_at.desc(), Suppression.id.desc())


@dataclass
class CsvImport:
    added: int = 0
    already: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


def import_csv(user_id: uuid.UUID, text: str, default_reason: str = "manual") -> CsvImport:
    """Rows with an `email` and/or `phone` column (and an optional `reason`), all or nothing: a row
    that names no valid address is reported by number and nothing is added."""
    header, rows = _csv_records(text)
    columns = {name.strip().lower() for name in header}
    if not columns & set(ADDRESS_KINDS):
        raise ValidationFailed("The CSV needs an email or a phone column.", errors={"file": ["No address column."]})
    result, entries = CsvImport(), []
    for number, row in enumerate(rows, start=2):
        if number - 1 > IMPORT_MAX_ROWS:
            raise ValidationFailed(f"At most {IMPORT_MAX_ROWS} rows per import.", errors={"file": ["Too many rows."]})
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        reason = row.get("reason") or default_reason
        found = [(kind, normalized(kind, row[kind])) for kind in ADDRESS_KINDS if row.get(kind)]
        if reason not in ("bounced", "complained", "unsubscribed", "manual") or not found or \
                any(address is None for _, address in found):
            result.errors.append({"row": number, "message": "Needs a valid email or phone, and a reason of "
                                                           "bounced, complained, unsubscribed or manual."})
            continue
        entries += [(kind, address, reason) for kind, address in found if address is not None]
    if result.errors:
        raise ValidationFailed("Some rows are not valid; nothing was added.", errors={"rows": result.errors[:20]})
    result.added = add_entries(user_id, entries)
    result.already = len({(k, a) for k, a, _ in entries}) - result.added
    db.session.commit()
    return result


def _csv_records(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and the rows (one past the limit at most); a file whose structure is broken (a
    stray carriage return in a field, say) is refused whole."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return list(reader.fieldnames or []), list(itertools.islice(reader, IMPORT_MAX_ROWS + 1))
    except csv.Error as exc:
        raise ValidationFailed(f"The CSV file cannot be read: {exc}.", errors={"file": [str(exc)]}) from None


def export_csv(user_id: uuid.UUID) -> Iterator[str]:
    """The whole list as CSV (erased addresses by hash only), streamed in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["kind", "address", "address_sha256", "reason", "created_at"])
    yield buffer.getvalue()
    for part in db.session.scalars(suppressions_query(user_id).execution_options(yield_per=2000)).partitions():
        buffer.seek(0)
        buffer.truncate()
        for entry in part:
            writer.writerow([entry.kind, entry.address or "", entry.address_hash, entry.reason,
                             entry.created_at.isoformat() + "Z"])
        yield buffer.getvalue()


# --- Holding consent ----------------------------------------------------------------------------

def hold_consent(user_id: uuid.UUID, contact_ids: Sequence[uuid.UUID], session: orm.Session | None = None) -> int:
    """After contacts were written: the channels of any suppressed address they hold get the
    suppression's consent and an authoritative source, so the merchant's data cannot lift it.
    One statement per address kind, on `session` (default: the app's); no commit. Contacts changed."""
    if not contact_ids:
        return 0
    declare("suppression", session=session)
    run = session.execute if session is not None else db.session.execute
    changed = 0
    for kind in ADDRESS_KINDS:
        channels = [t for t in catalogue.CHANNEL_TYPES if kind_for(t) == kind]
        entry = sa.select(Suppression.reason).where(
            Suppression.user_id == Contact.user_id, Suppression.kind == kind,
            Suppression.address_hash == sql_hash(contact_address(kind))).limit(1).scalar_subquery()
        value = sa.case(*((entry == reason, consent) for reason, (consent, _) in CONSENT.items()),
                        else_=DEFAULT_CONSENT[0])
        source = sa.case(*((entry == reason, src) for reason, (_, src) in CONSENT.items()),
                         else_=DEFAULT_CONSENT[1])
        consent: sa.ColumnElement[Any] = Contact.consent.expression
        sources: sa.ColumnElement[Any] = Contact.consent_sources.expression
        for channel in channels:
            consent = consent.op("||")(sa.func.jsonb_build_object(channel, value))
            sources = sources.op("||")(sa.func.jsonb_build_object(channel, source))
        lifted = sa.or_(*(sa.func.coalesce(Contact.consent[c].astext, "") == "subscribed" for c in channels))
        changed += rowcount(run(
            sa.update(Contact).where(Contact.user_id == user_id, Contact.id.in_(list(contact_ids)),
                                     contact_address(kind).is_not(None), lifted,
                                     suppressed(user_id, kind, contact_address(kind)))
            .values({Contact.consent: consent, Contact.consent_sources: sources, Contact.updated_at: sa.func.now()})
            .execution_options(synchronize_session=False)))
    return changed


# --- The forgotten ------------------------------------------------------------------------------

def identity_hashes(email: str | None, email_sha256: str | None, phone: str | None) -> set[str]:
    """The address hashes an event's identity carries (Meta's email hash is this same hash)."""
    found = {email_sha256} if email_sha256 else set()
    if email:
        found.add(address_hash(email.lower()))
    if phone:
        found.add(address_hash(phone))
    return found


def erased_among(session: orm.Session, user_id: uuid.UUID, identities: Iterable[Any]) -> set[str]:
    """Of the hashes these identities carry, those of people erased (one query for a batch)."""
    hashes = set().union(*(identity_hashes(i.email, i.email_sha256, i.phone) for i in identities))
    if not hashes:
        return set()
    return set(session.scalars(sa.select(Suppression.address_hash).where(
        Suppression.user_id == user_id, Suppression.reason == "erased", Suppression.address_hash.in_(hashes))))
