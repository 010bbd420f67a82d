"""Password hashing (argon2id) and the password policy (OWASP ASVS: length, breached-list check)."""
from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
# Long enough for any passphrase, short enough that hashing stays cheap for hostile input.
MAX_LENGTH = 128

# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3, m=64 MiB, p=4): above
# OWASP's minimum of m=19 MiB, t=2, p=1.
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def burn_verification_time(password: str) -> None:
    """Spend what a real verification costs, so an unknown account answers as slowly as a known one."""
    verify_password(_dummy_hash(), password)


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    lines = (line.strip().lower() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def password_problems(password: str, email: str | None = None) -> list[str]:
    """What is wrong with a new password; empty when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return [f"Must be at least {MIN_LENGTH} characters."]
    if len(password) > MAX_LENGTH:
        return [f"Must be at most {MAX_LENGTH} characters."]
    lowered = password.lower()
    if lowered in _common_passwords() or len(set(lowered)) <= 2:
        return ["This password is too common; choose another."]
    local_part = (email or "").split("@", 1)[0].lower()
    if len(local_part) >= 4 and local_part in lowered:
        return ["Must not contain your email address."]
    return []
