"""API keys as strings, and the scopes a key may hold.

A key reads `hk_live_<16 hex>_<secret>`: `hk_live_` lets people and secret scanners recognise it,
the 16 hex digits (64 random bits, not secret) are its public prefix, by which the key's row is
found with one indexed lookup, and the secret is 256 random bits, stored only as its SHA-256 (a
random secret that long needs no slow hash, only one that can't be reversed).
"""
from __future__ import annotations

import re
import secrets

from app.security import opaque_tokens

KEY_MARK = "hk_"  # any Herald key; a bearer token starting otherwise is a login token
LIVE_PREFIX = "hk_live_"
PREFIX_HEX = 16
_KEY = re.compile(rf"(?P<prefix>{LIVE_PREFIX}[0-9a-f]{{{PREFIX_HEX}}})_(?P<secret>[A-Za-z0-9_-]{{1,100}})")

# Every scope a key may hold, with what it allows. GETs need `read`; other methods the scope their
# blueprint declares (app.api.blueprint.ApiBlueprint); LOGIN_ONLY routes refuse keys altogether.
READ = "read"
SCOPES: dict[str, str] = {
    READ: "Every GET of the API (except sessions and API keys).",
    "contacts:write": "Create, import, change, unsubscribe and delete contacts.",
    "campaigns:write": "Campaigns, their channels and audiences, and their actions (schedule, launch, pause, "
                       "resume, cancel).",
    "events:write": "Data sources, where events come from: connect, change, delete, rotate ingest keys, sync.",
    "conversations:write": "Conversations with the assistant: start, post messages, rename, archive, delete.",
    "settings:write": "Merchant settings, provider accounts and the profile.",
    "webhooks:write": "Outgoing webhook endpoints: register, change, enable, disable, delete, replay deliveries.",
}
# Not a scope: routes only a login token reaches (sessions, passwords, managing API keys).
LOGIN_ONLY = "login"


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_MARK)


def new_api_key() -> tuple[str, str, str]:
    """A fresh key, its public prefix, and the hash of its secret (the only part of it stored)."""
    prefix = LIVE_PREFIX + secrets.token_hex(PREFIX_HEX // 2)
    secret = opaque_tokens.new_secret()
    return f"{prefix}_{secret}", prefix, opaque_tokens.hash_secret(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(key)
    return (match["prefix"], match["secret"]) if match else None
