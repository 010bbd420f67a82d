"""Login sessions: opening them, rotating refresh tokens, revoking, and the per-request liveness check."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.errors import NotFound, Unauthorized
from app.extensions import autocommit_engine, db
from app.models import TokenBlacklist, User, UserSession, utcnow
from app.security import opaque_tokens, passwords
from app.security.access_tokens import ACCESS_TOKEN_TTL, issue_access_token
from app.services import throttles
from app.services.prepared_statements import PreparedStatement

log = logging.getLogger(__name__)

SESSION_TTL = timedelta(days=30)
USER_AGENT_MAX = 512
# One message for unknown account and wrong password alike: no account enumeration.
BAD_CREDENTIALS = "Invalid email or password."
BAD_REFRESH = "The refresh token is invalid or expired."


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User
    token_type: str = "Bearer"


@dataclass(frozen=True)
class ClientInfo:
    ip_address: str | None
    user_agent: str | None


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.strip().lower()))


def login(email: str, password: str, client: ClientInfo) -> IssuedTokens:
    """Tokens for a correct password; 401 otherwise, and 429 (before the password is even checked)
    for a client that failed too often on this account or from its address (app.services.throttles)."""
    attempt = throttles.LoginAttempt(email, client.ip_address)
    attempt.admit()
    user = find_user_by_email(email)
    if user is None:
        passwords.burn_verification_time(password)
        attempt.failed()
        raise Unauthorized(BAD_CREDENTIALS)
    if not passwords.verify_password(user.password_hash, password):
        attempt.failed()
        raise Unauthorized(BAD_CREDENTIALS)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    user.last_login_at = utcnow()
    session = UserSession(id=uuid.uuid4(), user_id=user.id, expires_at=utcnow() + SESSION_TTL, refresh_token_hash="")
    tokens = _issue(session, user, client)
    db.session.add(session)
    db.session.commit()
    attempt.succeeded()
    return tokens


def refresh(refresh_token: str, client: ClientInfo) -> IssuedTokens:
    """Rotate: a new refresh and access token; the presented refresh token dies.

    Presenting a refresh token the session has already rotated away from means it was copied: the
    whole session is revoked, so the thief's and the owner's newest tokens both stop working.
    """
    parsed = opaque_tokens.split_refresh_token(refresh_token)
    if parsed is None:
        raise Unauthorized(BAD_REFRESH)
    session_id, secret = parsed
    session = db.session.get(UserSession, session_id, with_for_update=True)
    if session is None or session.is_revoked or session.expires_at <= utcnow():
        raise Unauthorized(BAD_REFRESH)
    if not opaque_tokens.secret_matches(secret, session.refresh_token_hash):
        _revoke(UserSession.id == session.id)
        db.session.commit()
        log.warning("refresh token reuse; session revoked", extra={"session_id": str(session.id)})
        raise Unauthorized("This refresh token was already used; the session has been revoked.")
    tokens = _issue(session, session.user, client)
    db.session.commit()
    return tokens


def _issue(session: UserSession, user: User, client: ClientInfo) -> IssuedTokens:
    secret = opaque_tokens.new_secret()
    access_token, jti, _ = issue_access_token(user.id, session.id)
    session.refresh_token_hash = opaque_tokens.hash_secret(secret)
    session.access_token_jti = jti
    session.ip_address = client.ip_address
    session.user_agent = (client.user_agent or "")[:USER_AGENT_MAX] or None
    return IssuedTokens(
        access_token=access_token,
        refresh_token=opaque_tokens.compose_refresh_token(session.id, secret),
        expires_in=int(ACCESS_TOKEN_TTL.total_seconds()),
        user=user,
    )


# Prepared once per connection: the per-request check only binds values and executes a stored plan.
_LIVE_TOKEN_USER = PreparedStatement(
    "herald_live_token_user",
    sa.select(User)
    .join(UserSession, UserSession.user_id == User.id)
    .where(
        UserSession.id == sa.bindparam("session_id"),
        UserSession.user_id == sa.bindparam("user_id"),
        UserSession.access_token_jti == sa.bindparam("jti"),
        UserSession.is_revoked.is_(False),
        UserSession.expires_at > sa.func.now(),
        ~sa.select(TokenBlacklist.id).where(TokenBlacklist.jti == sa.bindparam("jti")).exists(),
    ),
)
_LOAD_LIVE_TOKEN_USER = sa.select(User).from_statement(_LIVE_TOKEN_USER.statement)


def live_token_user(user_id: uuid.UUID, session_id: uuid.UUID, jti: str) -> User | None:
    """The token's user if the token is live, else None — one indexed query per request, uncached,
    so a revoke, a rotation, a blacklisted jti or a deleted user is refused by the very next request.

    It is a lone read, so it runs outside any transaction (the autocommit engine): one round trip
    instead of three. The user still lands in the session's identity map, so the view reading it,
    or changing it on the request's own transaction, costs no query.
    """
    return _LIVE_TOKEN_USER.execute_in(db.session, autocommit_engine(),
                                       {"session_id": session_id, "user_id": user_id, "jti": jti},
                                       _LOAD_LIVE_TOKEN_USER).scalar()


def logout(user_id: uuid.UUID, session_id: uuid.UUID, jti: str, token_expiry: datetime) -> None:
    _revoke(sa.and_(UserSession.user_id == user_id, UserSession.id == session_id), exact_expiry={jti: token_expiry})
    db.session.commit()


def logout_all(user_id: uuid.UUID) -> int:
    count = revoke_all(user_id)
    db.session.commit()
    return count


def revoke_all(user_id: uuid.UUID) -> int:
    """Revoke every session of the user (their access tokens die with them). No commit."""
    return _revoke(UserSession.user_id == user_id)


def revoke_session(user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    # Another user's session answers exactly like a missing one.
    if not _revoke(sa.and_(UserSession.user_id == user_id, UserSession.id == session_id)):
        raise NotFound("Session not found.")
    db.session.commit()


def revoke_other_sessions(user_id: uuid.UUID, keep_session_id: uuid.UUID) -> int:
    """Revoke every session but one; the caller commits (it is part of a larger change)."""
    return _revoke(sa.and_(UserSession.user_id == user_id, UserSession.id != keep_session_id))


def active_sessions(user_id: uuid.UUID) -> sa.Select:
    return (
        sa.select(UserSession)
        .where(UserSession.user_id == user_id, UserSession.is_revoked.is_(False), UserSession.expires_at > sa.func.now())
        .order_by(UserSession.updated_at.desc(), UserSession.id)
    )


def _revoke(condition: sa.ColumnElement[bool], exact_expiry: dict[str, datetime] | None = None) -> int:
    """Revoke the unrevoked sessions matching `condition` and blacklist their live access tokens.

    A session's access token was issued when its jti was last written (`updatedAt`), so it expires
    ACCESS_TOKEN_TTL later; callers that hold the token itself pass its exact expiry.
    """
    rows = db.session.execute(
        sa.select(UserSession.id, UserSession.user_id, UserSession.access_token_jti, UserSession.updated_at)
        .where(condition, UserSession.is_revoked.is_(False))
        .with_for_update()
    ).all()
    if not rows:
        return 0
    db.session.execute(
        sa.update(UserSession).where(UserSession.id.in_([r.id for r in rows])).values(is_revoked=True),
        execution_options={"synchronize_session": "fetch"},
    )
    exact_expiry = exact_expiry or {}
    now = utcnow()
    entries = [
        {"jti": r.access_token_jti, "userId": r.user_id,
         "expiresAt": exact_expiry.get(r.access_token_jti, r.updated_at + ACCESS_TOKEN_TTL + timedelta(seconds=1))}
        for r in rows
        if r.access_token_jti
    ]
    _blacklist([entry for entry in entries if entry["expiresAt"] > now])
    return len(rows)


def _blacklist(entries: list[dict]) -> None:
    if entries:
        stmt = pg_insert(TokenBlacklist.__table__).values(entries).on_conflict_do_nothing(index_elements=["jti"])
        db.session.execute(stmt)
