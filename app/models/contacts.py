"""The contact aggregate: a merchant's customers, how to reach them, and what they did."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import phonenumbers
import sqlalchemy as sa
from phonenumbers import timezone as phone_timezone
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, bulk_uuid_pk, created_at, updated_at, uuid_pk
from app.models.settings import MerchantSettings

CONSENT_VALUES = ("subscribed", "unsubscribed", "bounced", "complained")
# Who last set a channel's consent. An unsubscribe by the contact themself is never overwritten by
# the merchant's imports or by synced data.
CONSENT_SOURCES = ("contact", "merchant", "source", "provider")
# The `contact_timezones` source of a zone the merchant set; derived ones never replace it.
ZONE_SET_BY_MERCHANT = "merchant"
IDENTITY_KINDS = (
    "email", "phone", "email_sha256", "phone_sha256",
    "shopifyCustomerId", "ga4UserId", "ga4ClientId", "metaExternalId",
)


def _jsonb_object() -> orm.MappedColumn[dict[str, Any]]:
    return orm.mapped_column(pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        sa.Index("uq_contacts_user_email", "userId", sa.text("lower(email)"), unique=True,
                 postgresql_where=sa.text("email IS NOT NULL")),
        sa.Index("uq_contacts_user_phone", "userId", "phone", unique=True, postgresql_where=sa.text("phone IS NOT NULL")),
        sa.Index("ix_contacts_userId_createdAt", "userId", "createdAt"),
        # A launch writes the ledger in ranges of the merchant's contacts, in id order.
        sa.Index("ix_contacts_userId_id", "userId", "id"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    email: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    phone: orm.Mapped[str | None] = orm.mapped_column(sa.String())  # E.164
    first_name: orm.Mapped[str | None] = orm.mapped_column("firstName", sa.String())
    last_name: orm.Mapped[str | None] = orm.mapped_column("lastName", sa.String())
    attributes: orm.Mapped[dict[str, Any]] = _jsonb_object()
    external_ids: orm.Mapped[dict[str, Any]] = orm.mapped_column(
        "externalIds", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )
    consent: orm.Mapped[dict[str, str]] = _jsonb_object()
    consent_sources: orm.Mapped[dict[str, str]] = orm.mapped_column(
        "consentSources", pg.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()

    push_subscriptions: orm.Mapped[list[PushSubscription]] = orm.relationship(
        back_populates="contact", cascade="all, delete-orphan", passive_deletes=True, order_by="PushSubscription.created_at"
    )
    own_timezone: orm.Mapped[ContactTimezone | None] = orm.relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    # The merchant's default zone (merchant_settings), read with the contact where it is shown.
    merchant_timezone: orm.Mapped[str | None] = orm.column_property(
        sa.select(MerchantSettings.timezone).where(MerchantSettings.user_id == user_id)
        .correlate_except(MerchantSettings).scalar_subquery(),
        deferred=True,
    )

    def timezone_in_force(self) -> tuple[str, str]:
        """(zone, where it comes from): the contact's own (`contact`), else one derived from their
        Shopify address (`shopify`) or from events (`event`), else their phone number's region when it
        has one zone (`phone`), else the merchant's default (`merchant_default`)."""
        if self.own_timezone is not None:
            stored = self.own_timezone
            return stored.timezone, "contact" if stored.source == ZONE_SET_BY_MERCHANT else stored.source
        zone = phone_zone(self.phone)
        if zone is not None:
            return zone, "phone"
        return self.merchant_timezone or "UTC", "merchant_default"


def zone_for(own: str | None, phone: str | None, default: str) -> str:
    """The zone to plan a recipient's messages in, as `Contact.timezone_in_force` shows it."""
    return own or phone_zone(phone) or default


def phone_zone(phone: str | None) -> str | None:
    """The phone number's region's zone, when the region has exactly one."""
    zones = phone_timezones(phone)
    return zones[0] if len(zones) == 1 else None


def phone_timezones(phone: str | None) -> tuple[str, ...]:
    if not phone:
        return ()
    try:
        zones = phone_timezone.time_zones_for_number(phonenumbers.parse(phone))
    except phonenumbers.NumberParseException:
        return ()
    return tuple(zone for zone in zones if zone != phone_timezone.UNKNOWN_TIMEZONE)


class ContactTimezone(Base):
    """A contact's IANA timezone as the merchant gave it (API, import; source `merchant`) or as
    derived from where their Shopify address or events place them (`shopify`, `event`: see
    app.services.contact_timezones)."""

    __tablename__ = "contact_timezones"

    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    timezone: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    source: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    updated_at: orm.Mapped[datetime] = updated_at()


class ContactIdentity(Base):
    """Every key that identifies a contact (email, phone, their hashes, provider ids), one row each.

    Identity resolution for a whole batch of events is one lookup on this table's primary key.
    """

    __tablename__ = "contact_identities"
    __table_args__ = (sa.PrimaryKeyConstraint("userId", "kind", "value"),)

    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    value: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    )


class PushSubscription(Base):
    """A browser's Web Push subscription (RFC 8030 endpoint and RFC 8291 keys) for a contact."""

    __tablename__ = "contact_push_subscriptions"

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    endpoint: orm.Mapped[str] = orm.mapped_column(sa.Text(), nullable=False, unique=True)
    p256dh: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    auth: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    created_at: orm.Mapped[datetime] = created_at()

    contact: orm.Mapped[Contact] = orm.relationship(back_populates="push_subscriptions")


class ContactActivity(Base):
    """One processed event in a contact's history, in the normalized vocabulary (audiences query it)."""

    __tablename__ = "contact_activities"
    __table_args__ = (
        sa.Index("ix_contact_activities_contact_type_time", "contactId", "eventType", "occurredAt"),
        sa.Index("ix_contact_activities_user_type_time", "userId", "eventType", "occurredAt",
                 postgresql_include=["contactId"]),
    )

    id: orm.Mapped[uuid.UUID] = bulk_uuid_pk()
    # The merchant, copied for audience queries; the contact's foreign key already ties the row to
    # the account (and deletes it with it), so this one is not checked again on every insert.
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column("userId", pg.UUID(as_uuid=True), nullable=False)
    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    # The event it came from. Unique: processing an event twice can never write its activity twice.
    # Not a foreign key: a contact's history outlives the raw events (a source may be removed).
    data_event_id: orm.Mapped[uuid.UUID | None] = orm.mapped_column("dataEventId", pg.UUID(as_uuid=True), unique=True)
    event_type: orm.Mapped[str] = orm.mapped_column("eventType", sa.String(), nullable=False)
    original_name: orm.Mapped[str] = orm.mapped_column("originalName", sa.String(), nullable=False)
    occurred_at: orm.Mapped[datetime] = orm.mapped_column("occurredAt", sa.DateTime(), nullable=False)
    properties: orm.Mapped[dict[str, Any]] = _jsonb_object()
    created_at: orm.Mapped[datetime] = created_at()


class ConsentChange(Base):
    """One change of one channel's consent, written by a trigger on `contacts` whatever the path
    (migration 0017): the value, the source the contact now names for it, what the writing
    transaction declared (`via`: api, import, event, unsubscribe_link, provider, suppression,
    erasure...) and, for a person's own action, the request's IP and user agent."""

    __tablename__ = "consent_changes"
    __table_args__ = (sa.Index("ix_consent_changes_contact_created", "contactId", "createdAt"),)

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column("userId", pg.UUID(as_uuid=True), nullable=False)
    contact_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "contactId", sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False
    )
    channel: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    value: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)
    source: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    via: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    ip: orm.Mapped[str | None] = orm.mapped_column(sa.String())
    user_agent: orm.Mapped[str | None] = orm.mapped_column("userAgent", sa.String())
    created_at: orm.Mapped[datetime] = created_at()
