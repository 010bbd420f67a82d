"""The `bounces` process (`python -m app.bounce_server`): an SMTP server (aiosmtpd) for the bounce
domain, on BOUNCE_SMTP_ADDRESS:BOUNCE_SMTP_PORT.

It takes mail only for BOUNCE_DOMAIN (any other recipient: 550, it relays nothing) and hands each
message to app.services.bounces on a thread (the event loop keeps taking other sessions): a
delivery status notification or complaint report is applied, anything else is kept in `bounce_mail`.
It answers 250 only once the mail is applied or kept; when neither can be done now (the database is
unreachable, the delivery is still being sent) it answers 451, and the sending server tries again
later: nothing accepted is lost.

Without BOUNCE_DOMAIN, email goes out with its From address as envelope sender and bounces go
elsewhere: the process then only says so and waits (honcho stops every process when one exits).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiosmtpd.smtp import SMTP, Envelope, Session
from flask import Flask

from app import create_app
from app.extensions import db
from app.security.bounce_addresses import BounceAddresses, bounce_addresses
from app.services import bounces

log = logging.getLogger(__name__)

MAX_MAIL_BYTES = 10 * 1024 * 1024  # a bounce quotes the original message, which may be large


class BounceHandler:
    """aiosmtpd handler hooks (`handle_RCPT`, `handle_DATA`)."""

    def __init__(self, app: Flask, addresses: BounceAddresses) -> None:
        self._app, self._addresses = app, addresses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if not self._addresses.owns(address):
            return f"550 5.7.1 Relaying denied: this server takes mail for {self._addresses.domain} only"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        raw = raw if isinstance(raw, bytes) else str(raw or "").encode("utf-8", "surrogateescape")
        mail_from = envelope.mail_from or ""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.receive, mail_from, envelope.rcpt_tos, raw)
        except bounces.NotYet:
            return "451 4.3.0 The message this reports on is still being sent; try again later"
        except Exception:  # whatever failed, the sender keeps the mail and tries again
            log.exception("bounce mail not stored")
            return "451 4.3.0 Temporary failure; try again later"
        return "250 OK"

    def receive(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> None:
        with self._app.app_context():
            try:
                reason = bounces.receive_mail(mail_from, recipients, raw)
            finally:
                db.session.remove()
        if reason is not None:
            log.info("bounce mail kept: %s", reason)


async def serve(handler: BounceHandler, host: str, port: int, domain: str) -> None:
    """Take mail on host:port until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=domain, ident="Herald bounces", data_size_limit=MAX_MAIL_BYTES,
                     enable_SMTPUTF8=True),
        host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("taking bounce mail for %s on %s:%s", domain, host, port)
    async with server:
        await stop.wait()


def main() -> None:
    app = create_app()
    settings = app.config["HERALD_SETTINGS"]
    with app.app_context():
        addresses = bounce_addresses()
    if addresses is None:
        print("bounce server not started: BOUNCE_DOMAIN is not set", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    asyncio.run(serve(BounceHandler(app, addresses), settings.bounce_smtp_address, settings.bounce_smtp_port,
                      addresses.domain))


if __name__ == "__main__":
    main()
