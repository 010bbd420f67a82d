"""Merchants' provider accounts (Twilio, WhatsApp Cloud API, Web Push VAPID keys): secrets are
encrypted at rest and only ever decrypted for a send, to verify a provider's callback, or to keep
them across a replace. The API's functions take the owner's id: one merchant never sees or touches
another's account.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.channels.account_configs import SECRET_FIELDS, load_account_config
from app.channels.catalogue import ACCOUNT_CHANNELS, ACCOUNT_REF_FIELDS
from app.errors import Conflict, NotFound
from app.extensions import db, rowcount
from app.models import ProviderAccount
from app.security.secret_box import (
    REDACTED,
    decrypt_fields,
    redact_fields,
)
from app.services.sealed_configs import sealed_config
from app.services.transactions import transaction


@dataclass(frozen=True)
class AccountView:
    """What the API shows of an account: the config with its secrets masked, never decrypted."""

    channel_type: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class _AccountViewBundle(orm.Bundle):
    """Result rows as AccountView, so a plain `scalars()` (and so SelectPage) yields views."""

    def create_row_processor(self, query, procs, labels):
        def make_view(row) -> AccountView:
            values = dict(zip(labels, (proc(row) for proc in procs)))
            values["config"] = redact_fields(values["config"], SECRET_FIELDS[values["channel_type"]])
            return AccountView(**values)

        return make_view


def decrypted_account_config(user_id: uuid.UUID, channel_type: str) -> dict[str, Any] | None:
    found = account_for_sending(user_id, channel_type)
    return None if found is None else found[1]


def account_for_sending(user_id: uuid.UUID, channel_type: str) -> tuple[uuid.UUID, dict[str, Any]] | None:
    """(account id, decrypted config) of the merchant's account for the channel, if any."""
    row = db.session.execute(
        sa.select(ProviderAccount.id, ProviderAccount.config).where(ProviderAccount.user_id == user_id,
                                                                    ProviderAccount.channel_type == channel_type)
    ).first()
    return None if row is None else (row.id, decrypt_fields(row.config, SECRET_FIELDS[channel_type]))


def account_by_ref(channel_type: str, account_ref: str) -> tuple[uuid.UUID, dict[str, Any]] | None:
    """(merchant, decrypted config) of the account a callback names, if any."""
    row = db.session.execute(
        sa.select(ProviderAccount.user_id, ProviderAccount.config)
        .where(ProviderAccount.channel_type == channel_type, ProviderAccount.account_ref == account_ref)
        .limit(1)
    ).first()
    return None if row is None else (row.user_id, decrypt_fields(row.config, SECRET_FIELDS[channel_type]))


def list_accounts(user_id: uuid.UUID) -> sa.Select:
    """The merchant's accounts as AccountView rows, oldest first."""
    return _views().where(ProviderAccount.user_id == user_id).order_by(
        ProviderAccount.created_at, ProviderAccount.channel_type
    )


def get_account(user_id: uuid.UUID, channel_type: str) -> AccountView:
    _known_channel(channel_type)
    view = db.session.scalar(_views().where(ProviderAccount.user_id == user_id,
                                            ProviderAccount.channel_type == channel_type))
    if view is None:
        raise NotFound(f"No {channel_type} provider account is configured.")
    return view


def put_account(user_id: uuid.UUID, channel_type: str, config: Mapping[str, Any]) -> AccountView:
    """Create the merchant's account for the channel, or replace its config.

    A secret left out, or sent back as the redaction mask, keeps its stored value; for push, keeping
    the private key keeps its public key too, so browsers' subscriptions stay valid.
    """
    _known_channel(channel_type)
    with transaction():
        # Serializes PUTs of one account, so the secrets kept are the ones being replaced and two
        # concurrent first PUTs cannot both insert.
        _advisory_lock(f"herald.provider_account:{user_id}:{channel_type}")
        account = _owned_account(user_id, channel_type)
        stored = _stored_config(channel_type, config, account)
        account_ref = _claimed_ref(user_id, channel_type, stored)
        if account is None:
            account = ProviderAccount(user_id=user_id, channel_type=channel_type)
            db.session.add(account)
        account.config = stored
        account.account_ref = account_ref
    return get_account(user_id, channel_type)


def delete_account(user_id: uuid.UUID, channel_type: str) -> None:
    _known_channel(channel_type)
    with transaction():
        deleted = db.session.execute(
            sa.delete(ProviderAccount).where(ProviderAccount.user_id == user_id,
                                             ProviderAccount.channel_type == channel_type)
        )
        if rowcount(deleted) == 0:
            raise NotFound(f"No {channel_type} provider account is configured.")


def _views() -> sa.Select:
    return sa.select(
        _AccountViewBundle(
            "account",
            ProviderAccount.channel_type, ProviderAccount.config,
            ProviderAccount.created_at, ProviderAccount.updated_at,
        )
    )


def _known_channel(channel_type: str) -> None:
    if channel_type not in ACCOUNT_CHANNELS:
        raise NotFound(f"Provider accounts exist for {', '.join(ACCOUNT_CHANNELS)} only.")


def _advisory_lock(key: str) -> None:
    db.session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


def _owned_account(user_id: uuid.UUID, channel_type: str) -> ProviderAccount | None:
    return db.session.scalar(
        sa.select(ProviderAccount)
        .where(ProviderAccount.user_id == user_id, ProviderAccount.channel_type == channel_type)
        .with_for_update()
    )


def _stored_config(channel_type: str, config: Mapping[str, Any], account: ProviderAccount | None) -> dict[str, Any]:
    """Validate the config (with kept secrets) and encrypt its secrets; errors are reported under `config`."""
    secrets = SECRET_FIELDS[channel_type]
    if account is not None:
        current = decrypt_fields(account.config, secrets)
        kept = {name: current[name] for name in secrets
                if name in current and config.get(name, REDACTED) == REDACTED}
        config = {**config, **kept}
    return sealed_config(load_account_config, channel_type, config, secrets, "provider account")


def _claimed_ref(user_id: uuid.UUID, channel_type: str, config: Mapping[str, Any]) -> str | None:
    """The provider account the config names, refused when another merchant has connected it:
    callbacks find credentials by this reference, so it must lead to exactly one merchant."""
    ref_field = ACCOUNT_REF_FIELDS.get(channel_type)
    if ref_field is None:
        return None
    account_ref = config[ref_field]
    _advisory_lock(f"herald.provider_account_ref:{channel_type}:{account_ref}")
    taken = db.session.scalar(
        sa.select(ProviderAccount.id).where(
            ProviderAccount.channel_type == channel_type, ProviderAccount.account_ref == account_ref,
            ProviderAccount.user_id != user_id,
        ).limit(1)
    )
    if taken is not None:
        raise Conflict(
            f"This {ref_field} is already connected to another Herald account.",
            errors={"config": {ref_field: ["Already connected to another Herald account."]}},
        )
    return account_ref
