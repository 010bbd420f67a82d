"""Signed tokens in the tracking links of sent messages: open pixel, click, unsubscribe.

A token is base64url(ids + MAC), where the MAC is HMAC-SHA256 over the purpose and the ids, cut to
128 bits, with a key derived from SECRET_KEY. Tokens never expire (a years-old email's unsubscribe
link must still work) but each is bound to its purpose: an open token is no click token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from enum import Enum

from flask import current_app

MAC_BYTES = 16  # 128 bits: forging one needs ~2^128 guesses, and guesses are online only
_KEY_LABEL = b"herald/link-tokens/v1"
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")


class LinkPurpose(Enum):
    """What a token opens, and how many ids it carries."""

    OPEN = ("o", 1)  # delivery id
    CLICK = ("c", 2)  # delivery id, MessageLink id
    UNSUBSCRIBE = ("u", 1)  # delivery id

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def id_count(self) -> int:
        return self.value[1]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes | None:
    if not _ALPHABET.match(token):
        return None
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    # The last character can carry unused bits; only the canonical spelling is the token.
    return raw if _b64encode(raw) == token else None


class LinkSigner:
    def __init__(self, secret_key: str) -> None:
        # A key of its own, so a MAC made here can never stand for one made elsewhere with SECRET_KEY.
        self._key = hmac.new(secret_key.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, purpose: LinkPurpose, payload: bytes) -> bytes:
        message = purpose.label.encode() + b"\x00" + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, purpose: LinkPurpose, *ids: uuid.UUID) -> str:
        if len(ids) != purpose.id_count:
            raise ValueError(f"a {purpose.name} token carries {purpose.id_count} id(s)")
        payload = b"".join(item.bytes for item in ids)
        return _b64encode(payload + self._mac(purpose, payload))

    def verify(self, purpose: LinkPurpose, token: str) -> tuple[uuid.UUID, ...] | None:
        """The ids a genuine `purpose` token carries; None for anything forged, altered or misused."""
        size = 16 * purpose.id_count + MAC_BYTES
        if len(token) != len(_b64encode(bytes(size))):
            return None
        raw = _b64decode(token)
        if raw is None or len(raw) != size:
            return None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        return tuple(uuid.UUID(bytes=payload[i:i + 16]) for i in range(0, len(payload), 16))


def link_signer() -> LinkSigner:
    """The signer keyed by the running app's SECRET_KEY."""
    return LinkSigner(current_app.config["HERALD_SETTINGS"].secret_key)
