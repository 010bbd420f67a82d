"""The codes of short links (`{PUBLIC_BASE_URL}/l/<code>`): a delivery and one of its links in 20
characters, unforgeable without SECRET_KEY.

A code is base64url of 15 bytes: the first 6 bytes of the delivery id, the first 3 of the
MessageLink id, and 6 bytes of HMAC-SHA256 over both whole ids (a key derived from SECRET_KEY, of
its own). The prefixes find the candidate rows through the primary keys' indexes (ids are random
v4 UUIDs, so 48 bits all but always name one delivery); the MAC then says which candidate, if any,
the code was made for. Nothing is stored per message, and a code is the same however often the
message is prepared.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass

from flask import current_app

DELIVERY_PREFIX, LINK_PREFIX, MAC_BYTES = 6, 3, 6
CODE_LENGTH = 20  # (6 + 3 + 6) bytes in base64url, no padding
_KEY_LABEL = b"herald/short-links/v1"
_CODE = re.compile(rf"^[A-Za-z0-9_-]{{{CODE_LENGTH}}}$")


@dataclass(frozen=True)
class ParsedCode:
    """What a well-formed code says: the id ranges its delivery and link lie in, and its MAC."""

    delivery_range: tuple[uuid.UUID, uuid.UUID]
    link_range: tuple[uuid.UUID, uuid.UUID]
    mac: bytes


def _range(prefix: bytes) -> tuple[uuid.UUID, uuid.UUID]:
    # PostgreSQL orders uuids byte by byte, so every id with this prefix lies between these two.
    rest = 16 - len(prefix)
    return uuid.UUID(bytes=prefix + b"\x00" * rest), uuid.UUID(bytes=prefix + b"\xff" * rest)


class ShortCodes:
    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, delivery_id: uuid.UUID, link_id: uuid.UUID) -> bytes:
        return hmac.new(self._key, delivery_id.bytes + link_id.bytes, hashlib.sha256).digest()[:MAC_BYTES]

    def code(self, delivery_id: uuid.UUID, link_id: uuid.UUID) -> str:
        raw = delivery_id.bytes[:DELIVERY_PREFIX] + link_id.bytes[:LINK_PREFIX] + self._mac(delivery_id, link_id)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    @staticmethod
    def parse(code: str) -> ParsedCode | None:
        """The ranges to look in, or None for anything that is not a code at all."""
        if not _CODE.match(code):
            return None
        raw = base64.urlsafe_b64decode(code)
        delivery, link = raw[:DELIVERY_PREFIX], raw[DELIVERY_PREFIX:DELIVERY_PREFIX + LINK_PREFIX]
        return ParsedCode(_range(delivery), _range(link), raw[DELIVERY_PREFIX + LINK_PREFIX:])

    def made_for(self, parsed: ParsedCode, delivery_id: uuid.UUID, link_id: uuid.UUID) -> bool:
        return hmac.compare_digest(parsed.mac, self._mac(delivery_id, link_id))


def short_codes() -> ShortCodes:
    """The codes keyed by the running app's SECRET_KEY."""
    return ShortCodes(current_app.config["HERALD_SETTINGS"].secret_key)
