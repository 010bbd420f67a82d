"""Who the current request acts for, as authentication decided it (app.api.authentication).

Views read the merchant through `current_user_id()` whichever credential was presented: a login
token (a session, every scope) or an API key (its scopes only).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import g


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    session_id: uuid.UUID | None = None  # a login token's session
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] | None = None  # an API key's; None: a login token, which may do anything


def set_principal(principal: Principal) -> None:
    g.principal = principal


def current_principal() -> Principal:
    return g.principal


def current_user_id() -> uuid.UUID:
    return current_principal().user_id


def current_session_id() -> uuid.UUID:
    """The login token's session. Routes that read it are LOGIN_ONLY, so an API key never gets here."""
    session_id = current_principal().session_id
    if session_id is None:
        raise RuntimeError("no session: the route must be LOGIN_ONLY")
    return session_id
