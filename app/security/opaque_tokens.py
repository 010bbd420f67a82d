"""Opaque bearer secrets (refresh tokens, verification links): random, stored only as a hash."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

SECRET_BYTES = 32  # 256 bits


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 hex: a 256-bit random secret needs no slow hash, only one that can't be reversed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def compose_refresh_token(session_id: uuid.UUID, secret: str) -> str:
    """`<sessionId>.<secret>`: naming the session lets a replayed old token be recognised as reuse."""
    return f"{session_id}.{secret}"


def split_refresh_token(token: str) -> tuple[uuid.UUID, str] | None:
    session_part, sep, secret = token.partition(".")
    if not sep or not secret or len(secret) > 128:
        return None
    try:
        return uuid.UUID(session_part), secret
    except ValueError:
        return None
