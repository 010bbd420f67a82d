"""A real SMTP server (aiosmtpd) on localhost that keeps what it receives, for tests and benchmarks."""
from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    peer: tuple[str, int] | None = None  # the client's address and port: one per SMTP connection

    @cached_property
    def message(self) -> EmailMessage:
        # Parsed when a test looks, not while the server answers: the server stays as fast as a relay.
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part else ""


class _Collector:
    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self.lock = threading.Lock()
        self.data_latency = 0.0
        self.active = 0
        self.peak_concurrency = 0  # the most messages it was taking at once
        # Called with each message before the server answers its DATA (the sender is still waiting);
        # a returned SMTP reply ("451 ...") refuses the message instead of keeping it.
        self.on_data: Callable[[ReceivedMail], str | None] | None = None

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        self.active += 1  # one event loop: no lock needed between handlers
        self.peak_concurrency = max(self.peak_concurrency, self.active)
        try:
            if self.data_latency:
                # A relay's reply to DATA takes 100–300 ms (it writes the message to disk, scans
                # it); other sessions go on meanwhile, as they do at a real relay.
                await asyncio.sleep(self.data_latency)
        finally:
            self.active -= 1
        raw = envelope.original_content or envelope.content
        mail = ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), raw, session.peer)
        if self.on_data is not None:
            # On a thread: the hook may block (make HTTP requests) while other sessions go on.
            refusal = await asyncio.get_running_loop().run_in_executor(None, self.on_data, mail)
            if refusal:
                return refusal
        with self.lock:
            self.messages.append(mail)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 2525, data_latency: float = 0.0) -> None:
        self._collector = _Collector()
        self._collector.data_latency = data_latency
        self._controller = Controller(self._collector, hostname=host, port=port)
        self.host, self.port = host, port

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def data_latency(self) -> float:
        return self._collector.data_latency

    @data_latency.setter
    def data_latency(self, seconds: float) -> None:
        self._collector.data_latency = seconds

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._collector.lock:
            return list(self._collector.messages)

    @property
    def on_data(self) -> Callable[[ReceivedMail], str | None] | None:
        return self._collector.on_data

    @on_data.setter
    def on_data(self, hook: Callable[[ReceivedMail], str | None] | None) -> None:
        self._collector.on_data = hook

    @property
    def peak_concurrency(self) -> int:
        return self._collector.peak_concurrency

    def clear(self) -> None:
        with self._collector.lock:
            self._collector.messages.clear()
        self._collector.peak_concurrency = 0
        self._collector.data_latency = 0.0
        self._collector.on_data = None

    def wait_for(self, count: int, timeout: float = 15.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            received = self.messages
            if len(received) >= count:
                return received
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages at the SMTP sink, got {len(self.messages)}")
