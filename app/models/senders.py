"""The addresses and domains a merchant may send email from, once verified."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

from app.models.base import Base, created_at, updated_at, uuid_pk

SENDER_KINDS = ("address", "domain")
SENDER_STATUSES = ("pending", "verified")


class Sender(Base):
    """An email address (verified by a confirmation link mailed to it) or a domain (verified by the
    DNS records Herald shows for it: SPF, DKIM with Herald's own key, DMARC).

    An address's link token is stored as its SHA-256 and kept once used, so opening the link again
    says it is confirmed already. A domain's DKIM private key is sealed with DATA_ENCRYPTION_KEY.
    """

    __tablename__ = "senders"
    __table_args__ = (
        sa.CheckConstraint("(kind = 'address') = (email IS NOT NULL) AND (kind = 'domain') = (domain IS NOT NULL)",
                           name="one_identity"),
        sa.Index("uq_senders_userId_email", "userId", "email", unique=True, postgresql_where=sa.text("email IS NOT NULL")),
        sa.Index("uq_senders_userId_domain", "userId", "domain", unique=True,
                 postgresql_where=sa.text("domain IS NOT NULL")),
        sa.Index("ix_senders_user_created", "userId", "createdAt", "id"),
    )

    id: orm.Mapped[uuid.UUID] = uuid_pk()
    user_id: orm.Mapped[uuid.UUID] = orm.mapped_column(
        "userId", sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False)  # address | domain
    email: orm.Mapped[str | None] = orm.mapped_column(sa.String())  # lower-cased, IDNA domain
    domain: orm.Mapped[str | None] = orm.mapped_column(sa.String())  # lower-cased, IDNA
    status: orm.Mapped[str] = orm.mapped_column(sa.String(), nullable=False, server_default="pending")
    verified_at: orm.Mapped[datetime | None] = orm.mapped_column("verifiedAt", sa.DateTime())
    # An address's confirmation: asked for (a resend waits a minute), its token minted by the
    # worker that mails it (the mint is its claim), and mailed.
    confirmation_requested_at: orm.Mapped[datetime | None] = orm.mapped_column("confirmationRequestedAt",
                                                                               sa.DateTime())
    token_hash: orm.Mapped[str | None] = orm.mapped_column("tokenHash", sa.String(), unique=True)
    token_expires_at: orm.Mapped[datetime | None] = orm.mapped_column("tokenExpiresAt", sa.DateTime())
    confirmation_sent_at: orm.Mapped[datetime | None] = orm.mapped_column("confirmationSentAt", sa.DateTime())
    # A domain's DKIM key: the selector it is published under, the public key (base64 DER, the
    # record's p=) and the private key, sealed.
    dkim_selector: orm.Mapped[str | None] = orm.mapped_column("dkimSelector", sa.String())
    dkim_public_key: orm.Mapped[str | None] = orm.mapped_column("dkimPublicKey", sa.Text())
    dkim_private_key: orm.Mapped[str | None] = orm.mapped_column("dkimPrivateKey", sa.Text())
    # The last DNS check: when, and what it found for each record.
    checked_at: orm.Mapped[datetime | None] = orm.mapped_column("checkedAt", sa.DateTime())
    check_results: orm.Mapped[dict[str, Any] | None] = orm.mapped_column("checkResults", pg.JSONB())
    created_at: orm.Mapped[datetime] = created_at()
    updated_at: orm.Mapped[datetime] = updated_at()
