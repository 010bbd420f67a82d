"""The one small protocol every channel's provider follows, and the rules all of them share.

The send engine (app/services/sending.py) owns the ledger, counters, rate limits, pause/cancel and
crash safety; a provider turns one ledger row into one provider request and says what happened,
in two steps:

- `preload(contact_ids)`, on the engine's own thread, once per claim: read what preparing those
  contacts' messages needs in one query rather than one per message (optional).
- `prepare(message)`, on the engine's own thread: render the templates and build the request (or
  raise `Refused`: this message cannot be sent to this contact). Its tracked links are stored
  through app.services.tracking (committed on their own: a link must exist before the message
  leaves); nothing else is written, least of all the ledger.
- `transmit(prepared)`, on any of the engine's sending threads, several at once: hand the request
  over and read the answer. It touches nothing but the network, so it needs no app context; each
  thread borrows a connection of its own from the sender's `ConnectionPool`.

A provider is used as a context manager around a run: `__enter__` may open a first connection
(raising `ProviderUnavailable` when the provider cannot be reached, before anything is claimed);
`__exit__` closes every connection.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar, overload

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import SSLError as TlsError

from app.sources.http import parse_retry_after


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
    event: dict[str, Any] | None = None  # a flow step's triggering event (its properties), for templates


@dataclass(frozen=True)
class SendOutcome:
    """What the provider did with one message.

    accepted: the provider took it (counts as sent). delivered: the provider confirmed delivery in
    the same answer (an SMTP 250, a push service's 201). Not accepted: `error` says why; `retry_after`
    set means a rate limit — the row goes back to the queue untouched and every sender of the
    account waits; `deferred` means this recipient only was refused for now (an SMTP 4xx) — the row
    is tried again later, a bounded number of times.
    """

    accepted: bool
    delivered: bool = False
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    deferred: bool = False
    # The recipient's addresses the provider says are gone for good (a push subscription that
    # answered 404/410): the engine removes them, so no later message is sent to them.
    gone: tuple[str, ...] = ()
    # The provider says the recipient opted out on this channel (e.g. Twilio error 21610): the
    # contact's consent becomes `unsubscribed`, set by the provider, which merchant imports can't undo.
    opted_out: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """A provider's later word on a message it accepted, parsed from its (verified) callback.

    status: `delivered`, `read` (an open, which implies delivery) or `failed` (after acceptance).
    opted_out: the provider says the recipient stopped this sender's messages on the channel.
    """

    message_id: str
    status: str
    error: str | None = None
    opted_out: bool = False


class Refused(Exception):
    """This message cannot be sent to this contact (a template that fails for their data, an
    address the provider cannot take, a body too large): the row fails, the run goes on."""


class ProviderUnavailable(Exception):
    """The message was certainly not handed to the provider (no connection could be made, or the
    provider refused the account rather than the message), so it can safely be sent later. Any
    other exception from `transmit` means the outcome is unknown and the row is never resent."""


class UnsupportedChannel(Exception):
    """No provider is configured for this channel type."""


class ChannelSender(Protocol):
    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def preload(self, contact_ids: list[uuid.UUID]) -> None: ...

    def prepare(self, message: OutgoingMessage) -> Any: ...

    def transmit(self, prepared: Any) -> SendOutcome: ...


class SenderBase:
    """`send` for one message at a time (prepare, then transmit on the caller's thread)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def preload(self, contact_ids: list[uuid.UUID]) -> None:
        """Read, in one query, what `prepare` will need for these contacts (claimed together)."""
        return None

    def prepare(self, message: OutgoingMessage) -> Any:
        raise NotImplementedError

    def transmit(self, prepared: Any) -> SendOutcome:
        raise NotImplementedError

    def send(self, message: OutgoingMessage) -> SendOutcome:
        try:
            prepared = self.prepare(message)
        except Refused as exc:
            return SendOutcome(accepted=False, error=str(exc))
        return self.transmit(prepared)


T = TypeVar("T")


# A connection idle longer than this is closed rather than reused: servers close idle keep-alive
# connections after a few seconds (Apache after 5), and one they close just as a request goes out
# leaves that request's outcome unknown.
MAX_IDLE_SECONDS = 4.0


class ConnectionPool(Generic[T]):
    """Connections lent to one thread at a time and reused, most recently used first: at most as
    many exist as threads ever used them at once (a run's messages in flight)."""

    def __init__(self, open_connection: Callable[[], T], close_connection: Callable[[T], None]) -> None:
        self._open, self._close = open_connection, close_connection
        self._idle: list[tuple[T, float]] = []  # with the time each came back
        self._all: list[T] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[T]:
        connection = self._reusable()
        if connection is None:
            connection = self._open()
            with self._lock:
                self._all.append(connection)
        try:
            yield connection
        finally:
            with self._lock:
                self._idle.append((connection, time.monotonic()))

    def _reusable(self) -> T | None:
        with self._lock:
            if not self._idle:
                return None
            connection, since = self._idle.pop()
            if time.monotonic() - since <= MAX_IDLE_SECONDS:
                return connection
            # The most recent is stale, so all below it are: close them all.
            stale, self._idle = [connection, *(c for c, _ in self._idle)], []
            self._all = [c for c in self._all if all(c is not s for s in stale)]
        for old in stale:
            self._close(old)
        return None

    def add(self, connection: T) -> None:
        """An already opened connection, lent out first."""
        with self._lock:
            self._all.append(connection)
            self._idle.append((connection, time.monotonic()))

    def close(self) -> None:
        with self._lock:
            connections, self._all, self._idle = self._all, [], []
        for connection in connections:
            self._close(connection)


class HttpSender(SenderBase):
    """A provider reached over HTTP: one `requests.Session` per sending thread, from a pool."""

    def __init__(self) -> None:
        self._sessions: ConnectionPool[requests.Session] = ConnectionPool(self._new_session, requests.Session.close)

    def _new_session(self) -> requests.Session:
        return requests.Session()

    def __exit__(self, *exc_info: object) -> None:
        self._sessions.close()


# --- Rules every HTTP provider shares ----------------------------------------------------------

def never_reached(exc: requests.RequestException) -> bool:
    """True when the request certainly never reached the provider: no connection was opened
    (refused, DNS, connect timeout, TLS handshake) or the URL could not be used at all. This is
    what decides between "send it later" and "outcome unknown": a request that may have left must
    never be sent again (the recipient could get it twice)."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.ProxyError,
                        requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return True
    # requests wraps urllib3's MaxRetryError; its reason says whether a connection was ever made.
    # (urllib3's NewConnectionError, a refused or unresolvable host, is a ConnectTimeoutError.)
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, (NewConnectionError, ConnectTimeoutError, TlsError))


@overload
def retry_after(headers: Any, default: float) -> float: ...
@overload
def retry_after(headers: Any, default: None) -> float | None: ...
def retry_after(headers: Any, default: float | None) -> float | None:
    """A provider's Retry-After header as seconds from now (the one parse every outbound client
    shares, app.sources.http); `default` when absent or unreadable."""
    seconds = parse_retry_after(headers.get("Retry-After"))
    return default if seconds is None else seconds
