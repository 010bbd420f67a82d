"""Email over SMTP: one reused connection per sending thread, with unsubscribe headers, an open
pixel and click tracking.

What `transmit` says about a message:
- `SendOutcome(accepted=True, delivered=True)`: the server answered 250 to DATA (SPEC: for SMTP a
  250 counts as delivered); `provider_message_id` is the Message-ID header.
- `SendOutcome(accepted=False, error=...)`: a permanent refusal of this recipient or message (a 5xx
  answer). Sending it again would fail again. (`prepare` raises `Refused` for a message that
  cannot be composed: a bad address, a broken template.) A refusal of the recipient's mailbox
  itself (enhanced status 5.1.x, other than of our sender) also names the address in `gone`: a
  hard bounce at send time.
- `SendOutcome(accepted=False, deferred=True, error=...)`: a temporary refusal of this message (a
  4xx to MAIL, RCPT or DATA: a full mailbox, greylisting). Only this recipient waits and is tried
  again later; the session carries the next message.
- A dropped connection or a 421 ("closing the channel") before the message was taken: reconnect
  and try the message once more on the fresh session.
- raises `EmailTransientError` (a `ProviderUnavailable`): the server could not be reached (or
  dropped the fresh session too), or a link could not be stored. Nothing was handed over; it is
  safe to send later. `__enter__` raises it too when the server cannot be reached.
- raises `EmailOutcomeUnknown`: the connection broke while the message was being handed over; the
  server may have taken it. Never resend it automatically (the contact could get it twice).
"""
from __future__ import annotations

import email.policy
import re
import smtplib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from html import escape, unescape
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError

from app.channels.base import (
    ConnectionPool,
    OutgoingMessage,
    ProviderUnavailable,
    Refused,
    SenderBase,
    SendOutcome,
)
from app.channels.bounce_reports import enhanced_status
from app.channels.smtp import open_smtp, parse_smtp_url
from app.security.bounce_addresses import BounceAddresses, bounce_addresses
from app.security.dkim_keys import SigningKey
from app.security.link_tokens import LinkPurpose, LinkSigner, link_signer
from app.services import senders
from app.services.rendering import render
from app.services.tracking import LinkRegistry, is_trackable

ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058
_HREF = re.compile(r"""(<(?:a|area)\b[^>]*?\shref\s*=\s*)("[^"]*"|'[^']*'|[^\s"'<>`]+)""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class EmailTransientError(ProviderUnavailable):
    """Not handed over (4xx, no connection, storage failure): safe to send again later."""


class EmailOutcomeUnknown(Exception):
    """The connection broke during DATA: the server may have taken the message. Do not resend."""


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """Written as set. The stdlib would fold a long URI header into RFC 2047 encoded words, which
    RFC 2369 readers (mailbox providers' unsubscribe buttons) do not decode.

    BaseHeader is listed for the type checker: the registry mixes it in after the class it is given
    anyway, so the method resolution order is the same."""

    def fold(self, *, policy: email.policy.Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


class _HeaderTypes(HeaderRegistry):
    """The stdlib registry builds a new header class (`type(...)`) for every header it is asked
    for: several per message, the largest share of composing one. The classes depend only on the
    header's name, so each is built once."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._built.pop(name.lower(), None)


def _mail_policy() -> email.policy.EmailPolicy[EmailMessage]:
    headers = _HeaderTypes()
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post"):
        headers.map_to_type(name.lower(), _VerbatimHeader)
    return email.policy.default.clone(header_factory=headers)


MAIL_POLICY = _mail_policy()  # composing (\n line ends)
WIRE_POLICY = MAIL_POLICY.clone(linesep="\r\n")  # serializing for SMTP


class _MailboxGone(Refused):
    """A 5.1.x refusal of the recipient (no such mailbox or domain): a hard bounce."""


# Enhanced status codes that refuse our own sender, not the recipient (RFC 3463: 5.1.7, 5.1.8).
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})


class _Deferred(Exception):
    """A 4xx for this message: the server may take it later."""


class _Dropped(Exception):
    """The connection was gone before any of this message was handed over."""


@dataclass(frozen=True)
class _Composed:
    envelope_from: str
    recipient: str
    message: EmailMessage
    message_id: str
    signed: bytes | None = None  # the whole message, DKIM-signed, when its From domain has Herald's key


def _address(addr_spec: str, display_name: str = "") -> Address:
    """An ASCII address (an internationalized domain in its punycode form) or Refused."""
    local, _, domain = addr_spec.strip().rpartition("@")
    try:
        address = Address(display_name=display_name, addr_spec=f"{local}@{domain.encode('idna').decode('ascii')}")
    except (UnicodeError, ValueError, IndexError, MessageError) as exc:
        raise Refused(f"invalid email address {addr_spec!r}") from exc
    if not (address.username and address.domain):
        raise Refused(f"invalid email address {addr_spec!r}")
    return address


def _before_body_end(html: str, addition: str) -> str:
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + addition
    at = ends[-1].start()
    return html[:at] + addition + html[at:]


class EmailSender(SenderBase):
    """ChannelSender for email: one SMTP session per sending thread, each reused across messages."""

    def __init__(self, smtp_url: str, public_base_url: str, mail_from_default: str,
                 *, signer: LinkSigner | None = None, bounces: BounceAddresses | None = None) -> None:
        self._smtp_url = smtp_url
        self._base_url = public_base_url.rstrip("/")
        self._domain = urlsplit(self._base_url).hostname or "herald"
        self._default_from = parseaddr(mail_from_default)
        self._signer = signer or link_signer()
        # The envelope sender: each delivery's own signed bounce address when BOUNCE_DOMAIN is set.
        self._bounces = bounces or bounce_addresses()
        self._links = LinkRegistry("email")
        self._signing_keys: dict[tuple[uuid.UUID, str], SigningKey | None] = {}
        self._connections: ConnectionPool[SmtpConnection] = ConnectionPool(
            lambda: SmtpConnection(smtp_url), SmtpConnection.close)

    def __enter__(self) -> EmailSender:
        # Connect before anything is claimed: a server that can't be reached leaves the rows queued.
        first = SmtpConnection(self._smtp_url)
        first.connect()
        self._connections.add(first)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._connections.close()

    def prepare(self, message: OutgoingMessage) -> _Composed:
        return self._compose(message)

    def transmit(self, prepared: _Composed) -> SendOutcome:
        with self._connections.connection() as connection:
            try:
                return connection.transmit(prepared)
            except _MailboxGone as exc:
                return SendOutcome(accepted=False, error=str(exc), gone=(prepared.recipient,))
            except Refused as exc:
                return SendOutcome(accepted=False, error=str(exc))
            except _Deferred as exc:
                return SendOutcome(accepted=False, deferred=True, error=str(exc))

    # --- Composition ---------------------------------------------------------------------------

    def _tracking_url(self, purpose: LinkPurpose, *ids: uuid.UUID) -> str:
        return f"{self._base_url}/t/{purpose.label}/{self._signer.sign(purpose, *ids)}"

    def _compose(self, message: OutgoingMessage) -> _Composed:
        config, contact = message.config, message.contact
        sender = self._sender(config)
        recipient = _address(message.address)
        unsubscribe_url = self._tracking_url(LinkPurpose.UNSUBSCRIBE, message.delivery_id)
        try:
            # One line: whatever a contact's fields hold, a subject can never add a header.
            subject = " ".join(render(config.get("subject") or "", contact, event=message.event).split())
            text = render(config.get("text") or "", contact, event=message.event)
            html = render(config["html"], contact, html=True, event=message.event) if config.get("html") else None
        except Exception as exc:  # e.g. arithmetic on one contact's attribute: fails this message only
            raise Refused(f"template error: {type(exc).__name__}: {exc}") from exc
        mail = self._headers(message, sender, recipient, subject, unsubscribe_url)
        footer = f"--\nUnsubscribe: {unsubscribe_url}\n"
        mail.set_content(f"{text.rstrip()}\n\n{footer}" if text.strip() else footer)
        if html is not None:
            mail.add_alternative(self._tracked_html(html, message, unsubscribe_url), subtype="html")
        envelope = self._bounces.address(message.delivery_id) if self._bounces else sender.addr_spec
        return _Composed(envelope, recipient.addr_spec, mail, mail["Message-ID"], self._signed(message.user_id, mail))

    def _signed(self, user_id: uuid.UUID, mail: EmailMessage) -> bytes | None:
        """The message signed with its From domain's DKIM key, when the merchant verified that domain
        with Herald's key (looked up once per run)."""
        domain = mail["From"].addresses[0].domain.lower()
        if (user_id, domain) not in self._signing_keys:
            try:
                self._signing_keys[user_id, domain] = senders.signing_key(user_id, domain)
            except SQLAlchemyError as exc:
                raise EmailTransientError("could not read the sender's DKIM key") from exc
        key = self._signing_keys[user_id, domain]
        if key is None:
            return None
        raw = mail.as_bytes(policy=WIRE_POLICY)
        try:
            return key.signature(raw) + raw
        except ValueError as exc:
            raise Refused(str(exc)) from exc

    def _sender(self, config: dict[str, Any]) -> Address:
        if not config.get("fromEmail"):
            name, addr_spec = self._default_from
            return _address(addr_spec, name)
        return _address(config["fromEmail"], config.get("fromName") or "")

    def _headers(self, message: OutgoingMessage, sender: Address, recipient: Address, subject: str,
                 unsubscribe_url: str) -> EmailMessage:
        mail = EmailMessage(policy=MAIL_POLICY)
        mail["From"] = sender
        mail["To"] = recipient
        mail["Subject"] = subject
        mail["Date"] = formatdate(usegmt=True)
        # One Message-ID per delivery: a copy ever sent twice can be recognised as the same message.
        mail["Message-ID"] = f"<{message.delivery_id}@{self._domain}>"
        mail["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = ONE_CLICK
        mail["X-Herald-Delivery"] = str(message.delivery_id)
        return mail

    def _tracked_html(self, html: str, message: OutgoingMessage, unsubscribe_url: str) -> str:
        """Links rewritten to click tracking, then the unsubscribe link and the open pixel added."""
        urls = [url for url in map(self._trackable, _HREF.finditer(html)) if url]
        try:
            link_ids = self._links.ids_for(message.campaign_id, message.channel_id, urls) if urls else {}
        except SQLAlchemyError as exc:
            raise EmailTransientError("could not store the message's links") from exc

        def rewrite(match: re.Match[str]) -> str:
            url = self._trackable(match)
            if url is None:
                return match.group(0)
            tracked = self._tracking_url(LinkPurpose.CLICK, message.delivery_id, link_ids[url])
            return f'{match.group(1)}"{escape(tracked)}"'

        pixel = self._tracking_url(LinkPurpose.OPEN, message.delivery_id)
        footer = (f'<p style="font-size:12px"><a href="{escape(unsubscribe_url)}">Unsubscribe</a></p>'
                  f'<img src="{escape(pixel)}" width="1" height="1" alt="" style="border:0">')
        return _before_body_end(_HREF.sub(rewrite, html), footer)

    def _trackable(self, match: re.Match[str]) -> str | None:
        """The http(s) URL an href points at, when it is one to track (not mailto:, #anchors, ours)."""
        url = unescape(match.group(2).strip("\"'")).strip()
        return url if is_trackable(url, self._base_url) else None


class SmtpConnection:
    """One SMTP session, reopened when the server drops it between messages."""

    def __init__(self, smtp_url: str) -> None:
        self._smtp_url = smtp_url
        self._where = _host_and_port(smtp_url)
        self._client: smtplib.SMTP | None = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except OSError:
            client.close()

    def connect(self) -> smtplib.SMTP:
        self._drop()
        try:
            self._client = open_smtp(self._smtp_url)
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise EmailTransientError(f"cannot reach the SMTP server at {self._where}: {exc}") from exc
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def transmit(self, composed: _Composed) -> SendOutcome:
        try:
            return self._hand_over(composed)
        except _Dropped:
            # Servers close idle sessions; nothing of this message went out, so one fresh try is safe.
            self.connect()
        try:
            return self._hand_over(composed)
        except _Dropped as exc:
            raise EmailTransientError(f"SMTP server at {self._where} dropped the connection: "
                                      f"{exc.__cause__ or exc}") from exc

    def _hand_over(self, composed: _Composed) -> SendOutcome:
        client = self._client or self.connect()
        self._command(client.ehlo_or_helo_if_needed, "EHLO", expect_reply=False)
        self._command(lambda: client.mail(composed.envelope_from), "MAIL FROM")
        self._command(lambda: client.rcpt(composed.recipient), "RCPT TO")
        raw = composed.signed or composed.message.as_bytes(policy=WIRE_POLICY)
        try:
            code, reply = client.data(raw)
        except smtplib.SMTPResponseException as exc:  # DATA itself refused: no content was sent
            self._check(exc.smtp_code, exc.smtp_error, "DATA")
            raise
        except OSError as exc:
            self._drop()
            raise EmailOutcomeUnknown(f"SMTP connection lost during DATA: {exc}") from exc
        self._check(code, reply, "DATA")
        return SendOutcome(accepted=True, delivered=True, provider_message_id=composed.message_id)

    def _command(self, call: Callable[[], Any], stage: str, expect_reply: bool = True) -> None:
        """Run a command that comes before the message itself; a lost connection is `_Dropped`."""
        try:
            answer = call()
        except smtplib.SMTPResponseException as exc:
            self._check(exc.smtp_code, exc.smtp_error, stage)
            return
        except OSError as exc:
            self._drop()
            raise _Dropped(stage) from exc
        if not expect_reply:
            return
        code, reply = answer
        self._check(code, reply, stage)

    def _check(self, code: int, reply: bytes | str, stage: str) -> None:
        if code in (250, 251):
            return
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        detail = f"{stage} answered {code} {text}".strip()
        if code == 421:  # "closing the channel": the message was not taken; a fresh session may
            self._drop()
            raise _Dropped(detail)
        self._reset()
        status = enhanced_status(text)
        if code >= 500 and stage != "MAIL FROM" and status and status.startswith("5.1.") and \
                status not in _SENDER_STATUSES:
            raise _MailboxGone(detail)
        if code >= 500:
            raise Refused(detail)
        raise _Deferred(detail)

    def _reset(self) -> None:
        """Clear the refused transaction so the session can carry the next message."""
        if self._client is None:
            return
        try:
            self._client.rset()
        except OSError:
            self._drop()


def _host_and_port(smtp_url: str) -> str:
    settings = parse_smtp_url(smtp_url)
    return f"{settings.host}:{settings.port}"
