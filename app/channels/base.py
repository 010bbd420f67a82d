"""The one small protocol every channel's provider follows.

The send engine (app/services/sending.py) owns the ledger, counters, rate limits, pause/cancel and
crash safety; a provider only turns one ledger row into one provider request and says what happened.
A provider is used as a context manager around a batch, so it can hold one connection (one SMTP
session, one HTTP session) for the whole batch.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import requests


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: uuid.UUID
    campaign_id: uuid.UUID
    channel_id: uuid.UUID
    contact_id: uuid.UUID
    user_id: uuid.UUID  # the merchant
    address: str  # email address or E.164 phone; for push, "push" (the contact's subscriptions are read by the sender)
    contact: dict[str, Any]  # template context: id, email, phone, firstName, lastName, attributes, ...
    config: dict[str, Any]  # the channel's config (templates and settings), secrets decrypted


@dataclass(frozen=True)
class SendOutcome:
    """What the provider did with one message.

    accepted: the provider took it (counts as sent). delivered: the provider confirmed delivery in
    the same answer (an SMTP 250, a push service's 201). Not accepted: `error` says why; `retry_after`
    set means a rate limit — the row goes back to the queue untouched, to be sent later.
    """

    accepted: bool
    delivered: bool = False
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    # The provider says the recipient opted out on this channel (e.g. Twilio error 21610): the
    # contact's consent becomes `unsubscribed`, set by the provider, which merchant imports can't undo.
    opted_out: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class ProviderUnavailable(Exception):
    """The provider could not be reached before the message was handed over (connection refused,
    DNS, TLS handshake): the message was certainly not sent, so it can safely be sent later.
    Any other exception from `send` means the outcome is unknown."""


class UnsupportedChannel(Exception):
    """No provider is configured for this channel type."""


class ChannelSender(Protocol):
    def __enter__(self) -> "ChannelSender": ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(self, message: OutgoingMessage) -> SendOutcome: ...


class HttpBatchSender:
    """Holds one HTTP session for a batch (connection reuse); providers build it in `_new_session`."""

    _session: requests.Session | None = None

    def _new_session(self) -> requests.Session:
        return requests.Session()

    def __enter__(self) -> Self:
        self._session = self._new_session()
        return self

    def __exit__(self, *exc_info: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
