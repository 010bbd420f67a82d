"""Per-delivery bounce addresses (VERP): each email's envelope sender names its delivery, signed.

`b+<delivery id>.<MAC>@<BOUNCE_DOMAIN>`: the delivery id in base32 (26 characters) and an
HMAC-SHA256 over it cut to 80 bits (16 characters), with a key derived from SECRET_KEY. Base32 in
lower case, because mail systems may change the case of a local part; 45 characters in all, within
the 64 a local part may have. A bounce sent to such an address names its delivery whatever its
content claims, and nobody can make one up for a delivery they were not sent.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

from flask import current_app

MAC_BYTES = 10  # 80 bits: guesses can only be made online, one mail each
_KEY_LABEL = b"herald/bounce-addresses/v1"
_LOCAL_PART = re.compile(r"b\+([a-z2-7]{26})\.([a-z2-7]{16})")


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


class BounceAddresses:
    def __init__(self, secret_key: str, domain: str) -> None:
        self._key = hmac.new(secret_key.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self.domain = domain.lower()

    def _mac(self, delivery_id: uuid.UUID) -> str:
        return _b32(hmac.new(self._key, delivery_id.bytes, hashlib.sha256).digest()[:MAC_BYTES])

    def address(self, delivery_id: uuid.UUID) -> str:
        return f"b+{_b32(delivery_id.bytes)}.{self._mac(delivery_id)}@{self.domain}"

    def delivery_id(self, address: str) -> uuid.UUID | None:
        """The delivery a genuine bounce address of ours names; None for any other address."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        found = _LOCAL_PART.fullmatch(local.lower())
        if found is None or domain.lower().rstrip(".") != self.domain:
            return None
        encoded, mac = found.groups()
        delivery_id = uuid.UUID(bytes=base64.b32decode(encoded.upper() + "======"))
        if not hmac.compare_digest(mac, self._mac(delivery_id)):
            return None
        return delivery_id

    def owns(self, address: str) -> bool:
        """Whether mail to `address` is for the bounce domain (whatever its local part)."""
        return address.strip().strip("<>").rpartition("@")[2].lower().rstrip(".") == self.domain


def bounce_addresses() -> BounceAddresses | None:
    """The running app's bounce addresses; None when BOUNCE_DOMAIN is not set."""
    settings = current_app.config["HERALD_SETTINGS"]
    return BounceAddresses(settings.secret_key, settings.bounce_domain) if settings.bounce_domain else None
