"""The one place a request's credential is decided: a login access token or an API key.

Both come as `Authorization: Bearer ...`. A token starting `hk_` is an API key (app.services.api_keys:
one indexed lookup, its scopes checked against the route's); anything else is a login access token,
checked by flask-jwt-extended and app.security.access_tokens (one indexed lookup, every scope).
"""
from __future__ import annotations

import uuid

from flask import g, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request

from app.security.access_tokens import SESSION_CLAIM
from app.security.api_keys import looks_like_api_key
from app.security.principal import Principal, set_principal
from app.services import api_keys


def authenticate(scope: str) -> Principal:
    """The request's principal, allowed `scope` (a key scope, or LOGIN_ONLY); 401 or 403 otherwise."""
    token = _bearer_token()
    if token is not None and looks_like_api_key(token):
        key = api_keys.authenticate_key(token)
        api_keys.require_scope(key, scope)
        g.token_user = key.user
        principal = Principal(user_id=key.user.id, api_key_id=key.id, scopes=key.scopes)
    else:
        verify_jwt_in_request()  # its failures answer 401 through the loaders of app.security.access_tokens
        principal = Principal(user_id=uuid.UUID(get_jwt_identity()), session_id=uuid.UUID(get_jwt()[SESSION_CLAIM]))
    set_principal(principal)
    return principal


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
