"""Encryption of secrets at rest (data source credentials, provider keys, API answers kept for
idempotent retries) with DATA_ENCRYPTION_KEY.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under MultiFernet: the first key encrypts,
every listed key decrypts, so keys rotate by prepending a new one.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

ENCRYPTED_PREFIX = "enc:v1:"
REDACTED = "********"


def _box() -> MultiFernet:
    keys = current_app.config["HERALD_SETTINGS"].data_encryption_keys
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(value: str) -> str:
    return ENCRYPTED_PREFIX + _box().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    if not value.startswith(ENCRYPTED_PREFIX):
        raise ValueError("not an encrypted value")
    try:
        return _box().decrypt(value[len(ENCRYPTED_PREFIX):].encode()).decode()
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: DATA_ENCRYPTION_KEY does not hold the key it was written with") from exc


def encrypt_bytes(data: bytes) -> bytes:
    return _box().encrypt(data)


def decrypt_bytes(token: bytes) -> bytes:
    try:
        return _box().decrypt(token)
    except InvalidToken as exc:
        raise ValueError("cannot decrypt: DATA_ENCRYPTION_KEY does not hold the key it was written with") from exc


def encrypt_fields(config: Mapping[str, Any], secret_fields: Iterable[str]) -> dict[str, Any]:
    """A copy of `config` with the named fields encrypted (already-encrypted values kept)."""
    stored = dict(config)
    for name in secret_fields:
        value = stored.get(name)
        if isinstance(value, str) and value and not value.startswith(ENCRYPTED_PREFIX):
            stored[name] = encrypt(value)
    return stored


def decrypt_fields(stored: Mapping[str, Any], secret_fields: Iterable[str]) -> dict[str, Any]:
    config = dict(stored)
    for name in secret_fields:
        value = config.get(name)
        if isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX):
            config[name] = decrypt(value)
    return config


def redact_fields(stored: Mapping[str, Any], secret_fields: Iterable[str]) -> dict[str, Any]:
    """What the API shows: secrets replaced by a fixed mask (never their length or a prefix)."""
    shown = dict(stored)
    for name in secret_fields:
        if shown.get(name):
            shown[name] = REDACTED
    return shown
