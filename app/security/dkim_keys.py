"""DKIM keys Herald holds for merchants' domains: made here, published by the merchant as
`<selector>._domainkey.<domain>`, and used to sign each message sent from the domain (dkimpy)."""
from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048
# dkimpy's own list (From, Subject, Date, Message-ID, To, MIME headers, List-*), plus the one-click
# unsubscribe header: mailbox providers honour List-Unsubscribe-Post only under a DKIM signature
# (RFC 8058 §4).
SIGNED_HEADERS = [*dkim.DKIM.SHOULD, b"list-unsubscribe-post"]
_SELECTOR_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class NewKey:
    private_pem: str  # PKCS#1 PEM: seal it before storing
    public_key: str  # base64 DER SubjectPublicKeyInfo: the record's p= tag


def new_key() -> NewKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return NewKey(private_pem, base64.b64encode(public_der).decode())


def new_selector(prefix: str) -> str:
    """`<prefix>-<8 random characters>`: a new selector per key, so a key can be replaced by
    publishing another beside it."""
    return f"{prefix}-{''.join(secrets.choice(_SELECTOR_ALPHABET) for _ in range(8))}"


def record_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    private_pem: bytes = field(default=b"", repr=False)

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature header line (CRLF-terminated) for the message's exact bytes: put it
        before them. ValueError when it cannot be made (a malformed message or key)."""
        try:
            return dkim.sign(message, self.selector.encode(), self.domain.encode(), self.private_pem,
                             canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED_HEADERS)
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing failed: {exc}") from exc
