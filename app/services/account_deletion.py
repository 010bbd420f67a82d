"""Deleting a merchant's account and everything in it (`DELETE /api/v1/users/me`).

The request (password confirmed) takes effect at once in one transaction: the merchant is signed
out everywhere, their API keys are revoked, they can no longer sign in, every campaign still to
send is stopped, and the deletion is recorded. A worker then deletes the data in bounded batches,
each a transaction of its own and biggest tables first (the ledger, activity, contacts, raw
events), so no statement holds locks for long; the user's row goes last and the seed's cascades
take what little is left. A worker that dies part way is followed by beat's sweep, which starts the
deletion again where the batches left off.
"""
from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app import task_names as tasks
from app.errors import ValidationFailed
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import (
    AccountDeletion,
    ApiKey,
    Attribution,
    Campaign,
    ConsentChange,
    Contact,
    ContactActivity,
    ContactIdentity,
    DataEvent,
    DataSource,
    Delivery,
    Flow,
    FlowEnrollment,
    Suppression,
    User,
    WebhookEvent,
)
from app.security import passwords
from app.services import sessions
from app.services.maintenance import delete_in_batches

BATCH_SIZE = 5000
LOCKED_OUT = "!deleted"  # not an argon2 hash: no password verifies against it
STALLED_MINUTES = 10  # a deletion nobody advanced for this long is started again


def request_deletion(user_id: uuid.UUID, password: str) -> None:
    user = db.session.get_one(User, user_id)
    if not passwords.verify_password(user.password_hash, password):
        raise ValidationFailed("The password is incorrect.", errors={"password": ["Is incorrect."]})
    user.password_hash = LOCKED_OUT
    sessions.revoke_all(user_id)
    db.session.execute(sa.update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                       .values(revoked_at=sa.func.now()))
    db.session.execute(sa.update(Campaign).where(Campaign.user_id == user_id,
                                                 Campaign.status.in_(("scheduled", "running", "paused")))
                       .values(status="completed", ended_at=sa.func.now(), updated_at=sa.func.now()))
    db.session.execute(sa.update(Delivery).where(Delivery.status == "queued", Delivery.campaign_id.in_(
        sa.select(Campaign.id).where(Campaign.user_id == user_id))).values(status="skipped", skip_reason="cancelled"))
    db.session.execute(pg_insert(AccountDeletion).values(userId=user_id).on_conflict_do_nothing())
    enqueue_after_commit(tasks.DELETE_ACCOUNT, str(user_id))
    db.session.commit()


def delete_account(user_id: uuid.UUID, batch_size: int = BATCH_SIZE) -> bool:
    """Worker: delete the account's data batch by batch, then the account. False when there is no
    pending deletion for this user (done already, or never asked)."""
    if db.session.get(AccountDeletion, user_id) is None:
        db.session.rollback()
        return False
    campaigns = sa.select(Campaign.id).where(Campaign.user_id == user_id)
    sources = sa.select(DataSource.id).where(DataSource.user_id == user_id)
    steps: list[tuple[type[Any], sa.ColumnElement[bool]]] = [
        (Delivery, Delivery.campaign_id.in_(campaigns)),
        (FlowEnrollment, FlowEnrollment.flow_id.in_(sa.select(Flow.id).where(Flow.user_id == user_id))),
        (Attribution, Attribution.user_id == user_id),
        (ContactActivity, ContactActivity.user_id == user_id),
        (ConsentChange, ConsentChange.user_id == user_id),
        (ContactIdentity, ContactIdentity.user_id == user_id),
        (Contact, Contact.user_id == user_id),
        (DataEvent, DataEvent.data_source_id.in_(sources)),
        (Suppression, Suppression.user_id == user_id),
        (WebhookEvent, WebhookEvent.user_id == user_id),  # with their deliveries (cascade)
    ]
    for model, condition in steps:
        delete_in_batches(model, condition, batch_size)
        _touch(user_id)
    db.session.execute(sa.delete(User).where(User.id == user_id))
    db.session.commit()
    return True


def _touch(user_id: uuid.UUID) -> None:
    db.session.execute(sa.update(AccountDeletion).where(AccountDeletion.user_id == user_id)
                       .values(updated_at=sa.func.now()))
    db.session.commit()


def resume_stalled() -> int:
    """Beat: deletions nobody has advanced lately (a worker died, a message was lost) start again."""
    idle_since = sa.func.timezone("UTC", sa.func.now()) - sa.text(f"interval '{STALLED_MINUTES} minutes'")
    stalled = db.session.scalars(sa.select(AccountDeletion.user_id).where(AccountDeletion.updated_at < idle_since))
    count = 0
    for user_id in stalled:
        enqueue_after_commit(tasks.DELETE_ACCOUNT, str(user_id))
        count += 1
    db.session.commit()
    return count
