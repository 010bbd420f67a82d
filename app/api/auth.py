"""Auth routes: register, verify email, login, refresh, logout, sessions."""
from __future__ import annotations

import uuid

from flask import current_app, request
from flask_jwt_extended import get_jwt

from app.api.blueprint import ApiBlueprint, SelectPage
from app.extensions import limiter
from app.schemas.users import (
    LoginSchema,
    RefreshSchema,
    RegisterSchema,
    SessionSchema,
    TokenPairSchema,
    UserSchema,
    VerifyEmailSchema,
)
from app.security.access_tokens import current_token_expiry
from app.security.api_keys import LOGIN_ONLY
from app.security.principal import current_session_id, current_user_id
from app.services import accounts, sessions

# Sessions and the account's own security: a login token only, never an API key.
blp = ApiBlueprint("auth", __name__, write_scope=LOGIN_ONLY, url_prefix="/api/v1/auth",
                   description="Accounts, login and sessions")


def _client() -> sessions.ClientInfo:
    # remote_addr already honours PROXY_COUNT (ProxyFix); a raw X-Forwarded-For is never trusted.
    return sessions.ClientInfo(ip_address=request.remote_addr, user_agent=request.user_agent.string)


def _limit(name: str):
    return lambda: current_app.config[name]


def _created(response) -> bool:
    # Invalid input (422) costs nothing and creates nothing: it must not use up a client's registrations.
    return response.status_code == 201


@blp.route("/register", methods=["POST"])
@limiter.limit(_limit("REGISTER_RATE_LIMIT_IP"), deduct_when=_created)
@blp.arguments(RegisterSchema)
@blp.response(201, UserSchema)
def register(data):
    """Create an account; a verification link is mailed to it."""
    return accounts.register(**data)


@blp.route("/verify-email", methods=["POST"])
@blp.arguments(VerifyEmailSchema)
@blp.response(200, UserSchema)
def verify_email(data):
    """Confirm the address with the token from the verification mail (single use, 48 hours)."""
    return accounts.verify_email(data["token"])


@blp.route("/verify-email/resend", methods=["POST"])
@blp.authenticated
@blp.response(202)
def resend_verification():
    """Mail a new verification link; earlier links stop working. One a minute (else 429, Retry-After)."""
    accounts.request_verification(current_user_id())
    return {"status": "queued"}


@blp.route("/login", methods=["POST"])
@blp.arguments(LoginSchema)
@blp.response(200, TokenPairSchema)
def login(data):
    """Exchange email and password for an access token (15 minutes) and a refresh token (30 days).

    Failed logins are throttled per account and client, per client, and past a per-account ceiling
    (429 with Retry-After); the account's owner is not locked out by someone else's guesses."""
    return sessions.login(data["email"], data["password"], _client())


@blp.route("/refresh", methods=["POST"])
@blp.arguments(RefreshSchema)
@blp.response(200, TokenPairSchema)
def refresh(data):
    """Rotate the refresh token; reusing an already-rotated one revokes the session."""
    return sessions.refresh(data["refresh_token"], _client())


@blp.route("/logout", methods=["POST"])
@blp.authenticated
@blp.response(204)
def logout():
    """End this session; its access token is blacklisted."""
    sessions.logout(current_user_id(), current_session_id(), get_jwt()["jti"], current_token_expiry())


@blp.route("/logout-all", methods=["POST"])
@blp.authenticated
@blp.response(204)
def logout_all():
    """End every session of the account, this one included."""
    sessions.logout_all(current_user_id())


@blp.route("/sessions", methods=["GET"])
@blp.authenticated
@blp.response(200, SessionSchema(many=True))
@blp.paginate(SelectPage)
def list_sessions():
    """Active sessions, most recently used first; `current` marks the caller's."""
    return sessions.active_sessions(current_user_id())


@blp.route("/sessions/<uuid:session_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def revoke_session(session_id: uuid.UUID):
    """Revoke one session (its access token stops working at once)."""
    sessions.revoke_session(current_user_id(), session_id)
