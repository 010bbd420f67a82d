"""SMTP connections from `SMTP_URL` (smtp://user:pass@host:port?starttls=1, or smtps:// for TLS)."""
from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

TRUE_VALUES = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool
    timeout: float


def parse_smtp_url(url: str) -> SmtpSettings:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("SMTP_URL must start with smtp:// or smtps://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    implicit_tls = parts.scheme == "smtps"
    return SmtpSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (465 if implicit_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=implicit_tls,
        starttls=query.get("starttls", "0").lower() in TRUE_VALUES,
        timeout=float(query.get("timeout", "30")),
    )


def open_smtp(url: str) -> smtplib.SMTP:
    """A connected, authenticated SMTP client; the caller quits it (one connection per batch)."""
    settings = parse_smtp_url(url)
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if settings.implicit_tls:
        client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        if settings.starttls:
            client.starttls(context=context)
    if settings.username:
        client.login(settings.username, settings.password or "")
    return client
