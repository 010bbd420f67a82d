"""Merchants' API keys: creating, listing and revoking them, and the per-request check of one."""
from __future__ import annotations

import typing
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.errors import Forbidden, NotFound, Unauthorized
from app.extensions import autocommit_engine, db, rowcount
from app.models import ApiKey, User, utcnow
from app.security import api_keys as key_format
from app.security import opaque_tokens
from app.services.prepared_statements import PreparedStatement

# `lastUsedAt` is accurate to this: a key in constant use costs one write a minute, not one a request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
BEARER_HINT = "Send 'Authorization: Bearer <API key>'."


class InvalidApiKey(Unauthorized):
    code = "invalid_api_key"


class RevokedApiKey(Unauthorized):
    code = "api_key_revoked"


class InsufficientScope(Forbidden):
    code = "insufficient_scope"


class LoginTokenRequired(Forbidden):
    code = "login_token_required"


@dataclass(frozen=True)
class KeyIdentity:
    id: uuid.UUID
    user: User  # held for the request: views read it from the session's (weak) identity map
    scopes: frozenset[str]


@dataclass(frozen=True)
class CreatedApiKey:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: None
    key: str  # the whole key: in this answer only, never stored


def create_key(user_id: uuid.UUID, name: str, scopes: Iterable[str]) -> CreatedApiKey:
    chosen = set(scopes)
    if not chosen <= set(key_format.SCOPES):  # the schema checks too; never store a scope no route knows
        raise ValueError(f"unknown scopes: {sorted(chosen - set(key_format.SCOPES))}")
    key, prefix, secret_hash = key_format.new_api_key()
    row = ApiKey(user_id=user_id, name=name, prefix=prefix, secret_hash=secret_hash,
                 scopes=sorted(chosen, key=list(key_format.SCOPES).index))
    db.session.add(row)
    db.session.commit()
    return CreatedApiKey(id=row.id, name=row.name, prefix=row.prefix, scopes=row.scopes, created_at=row.created_at,
                         last_used_at=None, key=key)


def active_keys(user_id: uuid.UUID) -> sa.Select:
    return (sa.select(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc(), ApiKey.id))


def revoke_key(user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """The key stops working at once: every request looks it up (uncached). Another merchant's key
    answers exactly like a missing one."""
    revoked = db.session.execute(
        sa.update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=sa.func.now()),
        execution_options={"synchronize_session": False},
    )
    if not rowcount(revoked):
        raise NotFound("API key not found.")
    db.session.commit()


# Prepared once per connection, like the login token's check (app.services.sessions), and loading
# the key's user the same way, so a view reading the merchant costs no further query either.
_KEY_USER = PreparedStatement(
    "herald_api_key_user",
    sa.select(User, ApiKey.id.label("api_key_id"), ApiKey.secret_hash.label("secret_hash"),
              ApiKey.scopes.label("scopes"), ApiKey.revoked_at.label("revoked_at"),
              ApiKey.last_used_at.label("last_used_at"))
    .join(ApiKey, ApiKey.user_id == User.id)
    .where(ApiKey.prefix == sa.bindparam("prefix")),
)
_KEY_USER_ROWS = typing.cast(sa.TextualSelect, _KEY_USER.statement)  # a select's: typed columns
_LOAD_KEY_USER = sa.select(User, *list(_KEY_USER_ROWS.selected_columns)[-5:]).from_statement(_KEY_USER_ROWS)


def authenticate_key(key: str) -> KeyIdentity:
    """The key's identity, or 401: one indexed read on the autocommit engine, uncached, so a revoke
    is refused by the very next request. `lastUsedAt` moves when it is a minute old or more."""
    parts = key_format.split_api_key(key)
    if parts is None:
        raise _invalid()
    prefix, secret = parts
    engine = autocommit_engine()
    row = _KEY_USER.execute_in(db.session, engine, {"prefix": prefix}, _LOAD_KEY_USER).first()
    if row is None or not opaque_tokens.secret_matches(secret, row.secret_hash):
        raise _invalid()
    if row.revoked_at is not None:
        raise RevokedApiKey("This API key has been revoked.", headers=_challenge("The API key has been revoked."))
    if row.last_used_at is None or row.last_used_at <= utcnow() - LAST_USED_RESOLUTION:
        _touch(row.api_key_id, engine)
    return KeyIdentity(id=row.api_key_id, user=row.User, scopes=frozenset(row.scopes))


def require_scope(identity: KeyIdentity, scope: str) -> None:
    if scope == key_format.LOGIN_ONLY:
        raise LoginTokenRequired("API keys cannot use this route (sessions, passwords and API keys themselves): "
                                 "sign in and send the login access token.")
    if scope not in identity.scopes:
        raise InsufficientScope(
            f"This API key lacks the '{scope}' scope this route needs.",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def _touch(key_id: uuid.UUID, engine: sa.Engine) -> None:
    # Guarded in SQL too: processes racing on one key write it about once.
    db.session.execute(
        sa.update(ApiKey)
        .where(ApiKey.id == key_id,
               sa.or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= sa.func.now() - LAST_USED_RESOLUTION))
        .values(last_used_at=sa.func.now()),
        bind_arguments={"bind": engine},
        execution_options={"synchronize_session": False},
    )


def _invalid() -> InvalidApiKey:
    return InvalidApiKey(f"The API key is invalid. {BEARER_HINT}", headers=_challenge("The API key is invalid."))


def _challenge(description: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'}
