"""Web push: VAPID-signed (RFC 8292), aes128gcm-encrypted (RFC 8291) messages to every push
subscription of a contact, through pywebpush and one HTTP session per batch. Endpoints are merchant
input: each is called over https, at a public address checked once and then connected to
(app.channels.endpoint_guard).

What `send` says about a message (one ledger row, however many browsers the contact subscribed):
- `SendOutcome(accepted=True, delivered=True)`: at least one push service answered 201 (SPEC: a 201
  counts as delivered). Subscriptions that failed alongside are listed in `details`.
- `SendOutcome(accepted=False, error=...)`: nobody received it: every subscription was dead (404/410,
  each one reported in `gone` for the engine to remove), refused the message, or the account's
  keys are unusable.
- `SendOutcome(accepted=False, retry_after=...)`: a push service answered 429 before any subscription
  of this message took it; the engine hands the row back and waits.
- `SendOutcome(accepted=False, error="push service unavailable: ...")`: a push service could not
  be reached (or said 503) before any subscription of this message took it; the row fails rather
  than hold the channel (each browser's push service is its own).
- raises `PushUnavailable` (a `ProviderUnavailable`): the message's link could not be stored.
- raises `PushOutcomeUnknown`: a push service may have taken the message without saying so (the
  connection broke after the request went out, a 5xx other than 503). Never resent automatically.
Once one subscription has the message, later failures only make the outcome partial: resending the
whole message would reach that browser twice.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException
from py_vapid.utils import b64urldecode
from pywebpush import WebPushException, webpush
from sqlalchemy.exc import SQLAlchemyError

from app.channels.base import (
    HttpSender,
    OutgoingMessage,
    ProviderUnavailable,
    Refused,
    SendOutcome,
    never_reached,
    retry_after,
)
from app.channels.configs import TEMPLATE_FIELDS
from app.channels.endpoint_guard import EndpointGuard, EndpointRefused, PinnedAdapter
from app.config import Settings
from app.extensions import db
from app.models import PushSubscription
from app.security.link_tokens import LinkPurpose, LinkSigner, link_signer
from app.services.rendering import render
from app.services.tracking import LinkRegistry, is_trackable

log = logging.getLogger(__name__)

NO_LIVE_SUBSCRIPTIONS = "no live push subscriptions"
# RFC 8291 §4: a push service must take 4096 bytes of encrypted body; aes128gcm adds an 86-byte
# header, a 16-byte tag and a 1-byte padding delimiter to the plaintext.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
# Kept by the push service while the browser is offline. pywebpush's default (0) drops a campaign
# message for everyone whose browser is closed at that moment.
TTL_SECONDS = 24 * 3600
# A push service's VAPID token is signed once per audience (its origin) and reused until it nears
# its expiry (RFC 8292 §2: at most 24 hours), not signed again for every message.
VAPID_LIFETIME_SECONDS = 12 * 3600
VAPID_RENEW_SECONDS = 3600
TIMEOUT_SECONDS = 10.0
# A 429 after another browser of the same contact took the message: the row cannot go back to the
# queue (that browser would get it twice), so the sender waits here — briefly, its rows are leased.
PARTIAL_RETRY_WAIT_MAX = 5.0


class PushUnavailable(ProviderUnavailable):
    """Nothing of this message reached any push service: safe to send again later."""


class PushOutcomeUnknown(Exception):
    """A push service may have taken the message. Do not resend."""


@dataclass(frozen=True)
class _Subscription:
    id: uuid.UUID
    endpoint: str
    p256dh: str
    auth: str

    def info(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class _Push:
    """A prepared message: its encrypted-to-be payload and the browsers it goes to."""

    delivery_id: uuid.UUID
    subscriptions: list[_Subscription]
    payload: str


@dataclass(frozen=True)
class _Attempt:
    """One push to one subscription."""

    kind: str  # delivered | accepted | dead | failed | rate_limited | unavailable | unknown
    detail: str = ""
    location: str | None = None  # the push message resource (RFC 8030 §5)
    retry_after: float = 0.0


@dataclass
class _Tally:
    """The attempts of one message so far."""

    locations: list[str | None] = field(default_factory=list)  # 201s
    accepted: int = 0  # other 2xx: taken, delivery not confirmed
    gone: list[str] = field(default_factory=list)  # subscriptions answered 404/410
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def handed_over(self) -> bool:
        """Some browser may already have this message."""
        return bool(self.locations or self.accepted or self.unknown)

    def add(self, attempt: _Attempt) -> None:
        if attempt.kind == "delivered":
            self.locations.append(attempt.location)
        elif attempt.kind == "accepted":
            self.accepted += 1
        elif attempt.kind == "unknown":
            self.unknown.append(attempt.detail)
        else:
            self.failed.append(attempt.detail)

    def outcome(self) -> SendOutcome:
        details = {"delivered": len(self.locations), "accepted": self.accepted, "removed": len(self.gone),
                   "failed": self.failed, "unknown": self.unknown}
        if self.locations or self.accepted:
            first = next((location for location in self.locations if location), None)
            return SendOutcome(accepted=True, delivered=bool(self.locations), provider_message_id=first,
                               details=details, gone=tuple(self.gone))
        if self.unknown:
            raise PushOutcomeUnknown("; ".join(self.unknown))
        return SendOutcome(accepted=False, error="; ".join(self.failed) or NO_LIVE_SUBSCRIPTIONS, details=details,
                           gone=tuple(self.gone))


class _NoRedirects(requests.Session):
    """A push service answers, it never redirects: following one would post to wherever it points."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


def load_vapid(config: dict[str, Any]) -> tuple[Vapid, str]:
    """The account's signing key and `sub` claim, or Refused saying what is wrong with them."""
    subject = str(config.get("subject") or "")
    if not subject.startswith(("mailto:", "https:")):
        raise Refused("push account: subject must be a mailto: or https: URI (RFC 8292 §2.1)")
    vapid = _signing_key(str(config.get("vapidPrivateKey") or "").strip())
    public = vapid.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    expected = str(config.get("vapidPublicKey") or "")
    try:
        matches = not expected or b64urldecode(expected.encode()) == public
    except ValueError:  # binascii.Error included
        matches = False
    if not matches:
        # Browsers subscribed with vapidPublicKey; pushes signed by any other key are refused (403).
        raise Refused("push account: vapidPrivateKey does not match vapidPublicKey")
    return vapid, subject


def _signing_key(text: str) -> Vapid:
    """A P-256 key from PEM, or base64url of the raw 32 bytes or of DER (what pywebpush accepts).
    Parsed here, never handed to pywebpush as a string: it would read a file of that name."""
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Vapid.from_string(text).private_key
    except Exception as exc:  # cryptography and py_vapid raise many kinds; all mean "not a key"
        raise Refused("push account: vapidPrivateKey is not a readable private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise Refused("push account: vapidPrivateKey must be a P-256 (prime256v1) key")
    # py_vapid's own `sub` check refuses https: URIs with a path, which RFC 8292 allows;
    # load_vapid has checked the subject already.
    return Vapid(key, conf={"no-strict": True})


class PushSender(HttpSender):
    """ChannelSender for web push: one HTTP session per sending thread."""

    def __init__(self, config: dict[str, Any], settings: Settings, *, signer: LinkSigner | None = None) -> None:
        super().__init__()
        try:
            self._vapid: Vapid | None
            self._vapid, self._subject = load_vapid(config)
            self._account_error: str | None = None
        except Refused as exc:
            self._vapid, self._subject, self._account_error = None, "", str(exc)
        self._base_url = settings.public_base_url.rstrip("/")
        # Endpoints are merchant input: only public https hosts, at the address that was checked.
        self._guard = EndpointGuard(settings.push_allowed_private_networks)
        self._signer = signer or link_signer()
        self._links = LinkRegistry("push")
        self._preloaded: dict[uuid.UUID, list[_Subscription]] = {}
        self._signed: dict[str, tuple[dict[str, str], float]] = {}  # audience → (headers, expiry)

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        """The VAPID Authorization for the endpoint's push service, signed once per audience and
        reused until an hour before it expires (the sending threads may both sign one: harmless)."""
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        signed = self._signed.get(audience)
        if signed is None or signed[1] - now < VAPID_RENEW_SECONDS:
            expiry = int(now) + VAPID_LIFETIME_SECONDS
            assert self._vapid is not None  # prepare() refused every message of an account without a key
            signed = (self._vapid.sign({"sub": self._subject, "aud": audience, "exp": expiry}), expiry)
            self._signed[audience] = signed
        return signed[0]

    def _new_session(self) -> requests.Session:
        session = _NoRedirects()
        session.trust_env = False  # no proxy from the environment: it would look the host up again
        adapter = PinnedAdapter(self._guard)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def preload(self, contact_ids: list[uuid.UUID]) -> None:
        self._preloaded = _subscriptions_of(contact_ids)

    def prepare(self, message: OutgoingMessage) -> _Push:
        if self._account_error:
            raise Refused(self._account_error)
        # Read when the message is claimed, not once per run: a subscription removed meanwhile is not tried.
        if message.contact_id not in self._preloaded:
            self.preload([message.contact_id])
        subscriptions = self._preloaded.pop(message.contact_id)
        if not subscriptions:
            raise Refused(NO_LIVE_SUBSCRIPTIONS)
        return _Push(message.delivery_id, subscriptions, self._payload(message))

    def transmit(self, prepared: _Push) -> SendOutcome:
        with self._sessions.connection() as session:
            return self._push_all(session, prepared)

    # --- Payload -------------------------------------------------------------------------------

    def _payload(self, message: OutgoingMessage) -> str:
        config = message.config
        try:
            shown = {name: render(config.get(name) or "", message.contact, event=message.event)
                     for name in TEMPLATE_FIELDS["push"]}
        except Exception as exc:  # e.g. arithmetic on one contact's attribute: fails this message only
            raise Refused(f"template error: {type(exc).__name__}: {exc}") from exc
        if config.get("url"):
            shown["url"] = self._click_url(message, config["url"])
        if config.get("icon"):
            shown["icon"] = config["icon"]
        payload = json.dumps({**shown, "deliveryId": str(message.delivery_id)}, ensure_ascii=False)
        size = len(payload.encode())
        if size > MAX_PLAINTEXT:
            raise Refused(f"the notification is {size} bytes; web push carries at most {MAX_PLAINTEXT}")
        return payload

    def _click_url(self, message: OutgoingMessage, url: str) -> str:
        """The tracked link for `url` (email's rules for which URLs are tracked), or `url` itself."""
        if not is_trackable(url, self._base_url):
            return url
        try:
            link_id = self._links.ids_for(message.campaign_id, message.channel_id, [url])[url]
        except SQLAlchemyError as exc:
            raise PushUnavailable("could not store the message's link") from exc
        token = self._signer.sign(LinkPurpose.CLICK, message.delivery_id, link_id)
        return f"{self._base_url}/t/{LinkPurpose.CLICK.label}/{token}"

    # --- Transport -----------------------------------------------------------------------------

    def _push_all(self, session: requests.Session, push: _Push) -> SendOutcome:
        tally = _Tally()
        for subscription in push.subscriptions:
            attempt = self._push(session, subscription, push)
            if attempt.kind == "rate_limited" and tally.handed_over:
                attempt = self._retry_once(session, subscription, push, attempt)
            elif attempt.kind in ("rate_limited", "unavailable") and not tally.handed_over:
                return _hand_back(attempt)
            if attempt.kind == "dead":
                tally.gone.append(str(subscription.id))
            else:
                tally.add(attempt)
        return tally.outcome()

    def _retry_once(self, session: requests.Session, subscription: _Subscription, push: _Push,
                    limited: _Attempt) -> _Attempt:
        if limited.retry_after > PARTIAL_RETRY_WAIT_MAX:
            return _Attempt("failed", f"{limited.detail} (not retried: asked to wait {limited.retry_after:g} s)")
        time.sleep(limited.retry_after)
        return self._push(session, subscription, push)

    def _push(self, session: requests.Session, subscription: _Subscription, push: _Push) -> _Attempt:
        try:
            response = webpush(
                subscription.info(), data=push.payload, ttl=TTL_SECONDS, timeout=TIMEOUT_SECONDS,
                requests_session=session,
                # RFC 8030 §5.4: a copy of the same delivery still waiting replaces the earlier one.
                headers={"Topic": push.delivery_id.hex, **self._vapid_headers(subscription.endpoint)},
            )
        except EndpointRefused as exc:
            return _Attempt("failed", str(exc))
        except WebPushException as exc:
            if exc.response is None:
                return _Attempt("failed", f"invalid push subscription: {exc.message}")
            return _answered(exc.response)
        except (VapidException, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema):  # no http(s) origin to sign for or connect to
            return _Attempt("failed", "invalid push endpoint")
        except requests.RequestException as exc:
            kind = "unavailable" if never_reached(exc) else "unknown"
            return _Attempt(kind, f"{_host(subscription.endpoint)}: {type(exc).__name__}")
        except ValueError:  # keys that decode but are no P-256 point: encryption fails before sending
            return _Attempt("failed", "invalid push subscription keys")
        kind = "delivered" if response.status_code == 201 else "accepted"
        return _Attempt(kind, location=response.headers.get("Location"))


def _hand_back(attempt: _Attempt) -> SendOutcome:
    """Nothing of this message went out. A 429 hands the row back to be sent later. An unreachable
    push service fails the row: every browser has its own push service, and one that stays down
    must not hold the whole channel back the way a provider-wide outage would."""
    if attempt.kind == "rate_limited":
        return SendOutcome(accepted=False, error=attempt.detail, retry_after=attempt.retry_after)
    return SendOutcome(accepted=False, error=f"push service unavailable: {attempt.detail}")


def _answered(response: requests.Response) -> _Attempt:
    """A push service's refusal (any status pywebpush does not count as success)."""
    status = response.status_code
    detail = f"{_host(response.url)} answered {status} {response.reason or ''}".strip()
    if status in (404, 410):  # RFC 8030 §7.3: the subscription is gone for good
        return _Attempt("dead", detail)
    if status == 429:
        return _Attempt("rate_limited", detail, retry_after=retry_after(response.headers, 1.0))
    if status == 503:  # the service says it did not take the message
        return _Attempt("unavailable", detail)
    if status >= 500:  # a gateway may have passed it on before failing
        return _Attempt("unknown", detail)
    return _Attempt("failed", detail)


def _host(url: str) -> str:
    # Errors name the push service's host only: endpoint paths are per-browser secrets.
    return urlsplit(url).netloc or "push service"


def _subscriptions_of(contact_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[_Subscription]]:
    """Each contact's subscriptions, oldest first (every contact asked for has an entry)."""
    found: dict[uuid.UUID, list[_Subscription]] = {contact_id: [] for contact_id in contact_ids}
    rows = db.session.execute(
        sa.select(PushSubscription.contact_id, PushSubscription.id, PushSubscription.endpoint, PushSubscription.p256dh,
                  PushSubscription.auth)
        .where(PushSubscription.contact_id.in_(contact_ids))
        .order_by(PushSubscription.created_at, PushSubscription.id)
    ).all()
    for contact_id, subscription_id, endpoint, p256dh, auth in rows:
        found[contact_id].append(_Subscription(subscription_id, endpoint, p256dh, auth))
    return found
