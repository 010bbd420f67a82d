"""Access JWTs: issuing them, and the checks every authenticated request passes.

flask-jwt-extended answers several failures with 422 or 400 by default; the contract is 401 with a
JSON body for all of them, so every loader is overridden here. A token is live only while its
session exists, is unrevoked and unexpired, still names this jti (a refresh retires the previous
access token), and the jti is not blacklisted — one indexed lookup per request.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import g, jsonify
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    decode_token,
    get_jwt,
)

from app.errors import error_body

ACCESS_TOKEN_TTL = timedelta(minutes=15)
SESSION_CLAIM = "sid"


def issue_access_token(user_id: uuid.UUID, session_id: uuid.UUID) -> tuple[str, str, datetime]:
    """A signed access token for the session, its jti, and its expiry (naive UTC)."""
    token = create_access_token(
        identity=str(user_id), additional_claims={SESSION_CLAIM: str(session_id)}, expires_delta=ACCESS_TOKEN_TTL
    )
    claims = decode_token(token)
    expires = datetime.fromtimestamp(claims["exp"], UTC).replace(tzinfo=None)
    return token, claims["jti"], expires


def current_token_expiry() -> datetime:
    return datetime.fromtimestamp(get_jwt()["exp"], UTC).replace(tzinfo=None)


def _unauthorized(code: str, message: str):
    response = jsonify(error_body(401, code, message))
    response.status_code = 401
    response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{message}"'
    return response


def register_jwt_handlers(jwt: JWTManager) -> None:
    from app.services import (
        sessions,  # the liveness rule lives with the sessions it reads
    )

    @jwt.token_in_blocklist_loader
    def is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        try:
            user_id = uuid.UUID(payload["sub"])
            session_id = uuid.UUID(payload[SESSION_CLAIM])
        except (KeyError, TypeError, ValueError):
            return True
        # Held for the request: the session's identity map is weak, and views read this user again.
        g.token_user = sessions.live_token_user(user_id, session_id, payload["jti"])
        return g.token_user is None

    @jwt.user_lookup_loader
    def token_user(_header: dict[str, Any], _payload: dict[str, Any]):
        return g.get("token_user")

    @jwt.unauthorized_loader
    def missing(reason: str):
        return _unauthorized("missing_token",
                             "Authentication required: send 'Authorization: Bearer <accessToken or API key>'.")

    @jwt.invalid_token_loader
    def invalid(reason: str):
        return _unauthorized("invalid_token", "The access token is invalid.")

    @jwt.expired_token_loader
    def expired(_header: dict[str, Any], _payload: dict[str, Any]):
        return _unauthorized("token_expired", "The access token has expired; refresh it.")

    @jwt.revoked_token_loader
    def revoked(_header: dict[str, Any], _payload: dict[str, Any]):
        return _unauthorized("token_revoked", "The access token has been revoked.")

    @jwt.token_verification_failed_loader
    def verification_failed(_header: dict[str, Any], _payload: dict[str, Any]):
        return _unauthorized("invalid_token", "The access token is invalid.")

    @jwt.user_lookup_error_loader
    def user_missing(_header: dict[str, Any], _payload: dict[str, Any]):
        return _unauthorized("invalid_token", "The access token is invalid.")
