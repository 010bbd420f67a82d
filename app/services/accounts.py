"""Accounts: registration, email verification, profile and password changes."""
from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app import task_names as tasks
from app.errors import Conflict, HeraldError, NotFound, TooManyRequests, ValidationFailed
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import EmailVerification, User, utcnow
from app.security import opaque_tokens, passwords
from app.services import account_mail, sessions

log = logging.getLogger(__name__)

VERIFICATION_TTL = timedelta(hours=48)
# A verification the immediate task has not sent after this long is picked up by the beat sweep.
VERIFICATION_SWEEP_GRACE = timedelta(minutes=1)
# How long a worker may take between minting a verification's token and recording its mail sent
# (SMTP's own timeout is 30 s) before another may send it instead.
VERIFICATION_CLAIM_LEASE = timedelta(minutes=5)
# Between two verification mails to one account (registration counts): no mail-bombing an inbox.
RESEND_INTERVAL = timedelta(minutes=1)


class InvalidVerificationToken(HeraldError):
    status, code = 400, "invalid_token"


def _check_password(password: str, email: str | None, field: str = "password") -> None:
    problems = passwords.password_problems(password, email)
    if problems:
        raise ValidationFailed("The password does not meet the policy.", errors={field: problems})


def register(email: str, password: str, **profile: Any) -> User:
    """Create an account and queue its verification mail.

    An address that already has an account gets the same answer (a user-shaped 201) after the same
    work (one argon2 hash), so registration reveals nothing; the owner is told by mail instead.
    """
    email = email.strip()
    _check_password(password, email)
    password_hash = passwords.hash_password(password)
    existing = sessions.find_user_by_email(email)
    if existing is None:
        user = User(email=email, password_hash=password_hash, **profile)
        db.session.add(user)
        try:
            db.session.flush()
        except IntegrityError:  # a concurrent registration of the same address won the race
            db.session.rollback()
            existing = sessions.find_user_by_email(email)
            assert existing is not None  # the insert failed on the winner's committed row
        else:
            _queue_verification(user)
            db.session.commit()
            return user
    enqueue_after_commit(tasks.NOTIFY_DUPLICATE, str(existing.id))
    db.session.commit()
    now = utcnow()
    return User(id=uuid.uuid4(), email=email, is_verified=False, created_at=now, updated_at=now, **profile)


def _queue_verification(user: User) -> None:
    verification = EmailVerification(id=uuid.uuid4(), user_id=user.id)
    db.session.add(verification)
    enqueue_after_commit(tasks.SEND_VERIFICATION, str(verification.id))


def request_verification(user_id: uuid.UUID) -> None:
    """Resend: earlier unused links stop working; a new one is mailed — at most one a minute."""
    user = get_user(user_id, lock=True)  # two resends at once must not both pass the interval check
    if user.is_verified:
        db.session.rollback()
        return
    # An interval (timestamp + interval - timestamp), which SQLAlchemy's typing gives as a datetime.
    wait = cast("timedelta | None", db.session.scalar(
        sa.select(sa.func.max(EmailVerification.created_at) + RESEND_INTERVAL - sa.func.now())
        .where(EmailVerification.user_id == user_id)
    ))
    if wait is not None and wait > timedelta(0):
        db.session.rollback()
        seconds = math.ceil(wait.total_seconds())
        raise TooManyRequests(
            f"A verification link was sent less than a minute ago; ask again in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
    db.session.execute(
        sa.delete(EmailVerification).where(EmailVerification.user_id == user_id, EmailVerification.used_at.is_(None))
    )
    _queue_verification(user)
    db.session.commit()


def send_verification_email(verification_id: uuid.UUID) -> bool:
    """Mint the token, mail the link, record it sent — once, however often the task runs.

    Three transactions on purpose: the token's hash is committed before the mail goes out, so the
    link works the moment it arrives; the mail is sent with no transaction open; then it is recorded
    sent. Minting the token is also the claim that keeps a second worker from sending the same mail:
    it lapses after VERIFICATION_CLAIM_LEASE (a worker that died mid-send) and a refused send
    releases it at once, so the retry mails a fresh link.
    """
    token = opaque_tokens.new_secret()
    token_hash = opaque_tokens.hash_secret(token)
    user = _claim_verification(verification_id, token_hash)
    if user is None:
        db.session.rollback()
        return False
    message = account_mail.compose_verification(user, token)
    db.session.commit()
    try:
        account_mail.deliver(message)
    except Exception:
        _release_verification(verification_id, token_hash)
        db.session.commit()
        raise
    db.session.execute(
        sa.update(EmailVerification)
        .where(EmailVerification.id == verification_id, EmailVerification.token_hash == token_hash)
        .values(sent_at=utcnow())
    )
    db.session.commit()
    return True


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Not sent, not used, and either never claimed or claimed longer ago than the lease.

    A claim is the minting of the token: `expiresAt` is set VERIFICATION_TTL after it.
    """
    return sa.and_(
        EmailVerification.sent_at.is_(None),
        EmailVerification.used_at.is_(None),
        sa.or_(EmailVerification.token_hash.is_(None),
               EmailVerification.expires_at < now + VERIFICATION_TTL - VERIFICATION_CLAIM_LEASE),
    )


def _claim_verification(verification_id: uuid.UUID, token_hash: str) -> User | None:
    """Give the verification this token, if no live claim holds it; its user. No commit."""
    now = utcnow()
    user_id = db.session.scalar(
        sa.update(EmailVerification)
        .where(EmailVerification.id == verification_id, _claimable(now))
        .values(token_hash=token_hash, expires_at=now + VERIFICATION_TTL)
        .returning(EmailVerification.user_id),
        execution_options={"synchronize_session": False},
    )
    return None if user_id is None else db.session.get(User, user_id)


def _release_verification(verification_id: uuid.UUID, token_hash: str) -> None:
    """Undo a claim whose mail was refused, so a retry sends at once. No commit."""
    db.session.execute(
        sa.update(EmailVerification)
        .where(EmailVerification.id == verification_id, EmailVerification.token_hash == token_hash,
               EmailVerification.sent_at.is_(None))
        .values(token_hash=None, expires_at=None)
    )


def pending_verification_ids(limit: int = 500) -> list[uuid.UUID]:
    """Verifications whose mail a lost message or a crash left unsent."""
    now = utcnow()
    return list(
        db.session.scalars(
            sa.select(EmailVerification.id)
            .where(_claimable(now), EmailVerification.created_at < now - VERIFICATION_SWEEP_GRACE)
            .order_by(EmailVerification.created_at)
            .limit(limit)
        )
    )


def notify_duplicate_registration(user_id: uuid.UUID) -> None:
    user = db.session.get(User, user_id)
    if user is None:
        return
    message = account_mail.compose_duplicate_registration_notice(user)
    db.session.rollback()  # nothing to write: no transaction stays open while SMTP answers
    account_mail.deliver(message)


def verify_email(token: str) -> User:
    verification = db.session.scalar(
        sa.select(EmailVerification)
        .where(EmailVerification.token_hash == opaque_tokens.hash_secret(token))
        .with_for_update()
    )
    # A token is stored together with its expiry: a row found by its hash has one.
    if (verification is None or verification.used_at is not None
            or verification.expires_at is None or verification.expires_at <= utcnow()):
        raise InvalidVerificationToken("The verification link is invalid, expired or already used.")
    verification.used_at = utcnow()
    user = db.session.get_one(User, verification.user_id)
    user.is_verified = True
    db.session.commit()
    return user


def get_user(user_id: uuid.UUID, lock: bool = False) -> User:
    """The user (404 if gone); `lock` takes the row lock and rereads it under that lock."""
    user = db.session.get(User, user_id, with_for_update=lock or None, populate_existing=lock)
    if user is None:
        raise NotFound("User not found.")
    return user


def update_profile(user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    user = get_user(user_id)
    for attribute, value in changes.items():
        setattr(user, attribute, value)
    db.session.commit()
    return user


def change_password(user_id: uuid.UUID, current_session_id: uuid.UUID, current: str, new: str) -> None:
    """Set a new password and sign out every other session (a leaked password's sessions die)."""
    user = get_user(user_id)
    if not passwords.verify_password(user.password_hash, current):
        raise ValidationFailed("The current password is incorrect.", errors={"currentPassword": ["Is incorrect."]})
    _check_password(new, user.email, field="newPassword")
    user.password_hash = passwords.hash_password(new)
    sessions.revoke_other_sessions(user_id, current_session_id)
    db.session.commit()


def create_user(email: str, password: str, *, verified: bool = False, **profile: Any) -> User:
    """An account made by an operator (`flask users create`), already verified if they say so.

    Unlike registration, a taken address is refused outright: whoever runs this has the database.
    """
    email = email.strip()
    _check_password(password, email)
    if sessions.find_user_by_email(email) is not None:
        raise Conflict(f"An account with the address {email} exists already.")
    user = User(email=email, password_hash=passwords.hash_password(password), is_verified=verified, **profile)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # created concurrently
        db.session.rollback()
        raise Conflict(f"An account with the address {email} exists already.") from None
    if not verified:
        _queue_verification(user)
    db.session.commit()
    return user
