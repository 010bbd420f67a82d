"""Bounces and complaints, from every place they arrive, applied to the ledger and the contact once.

Mail to the bounce domain (the `bounces` process), the relay's refusal of an unknown mailbox at send
time, and the providers' webhooks (Amazon SES through SNS, SendGrid) all end in `_apply`:

- a hard bounce: the delivery fails with the diagnostic (counters never go backwards: it stays in
  `sentCount`), and the contact's email consent becomes `bounced`;
- a complaint: the contact's email consent becomes `complained`;
- a drop (the provider never sent it: SendGrid `dropped`, an SES `Reject`): the delivery fails;
  when the provider dropped it for its own list (the address bounced, reported spam or unsubscribed
  there), the address goes on the merchant's suppression list with that reason;
- a soft bounce: counted; the delivery fails when the report says the message was given up on (not
  for a delay warning); BOUNCE_SOFT_LIMIT of them in a row make a hard bounce. A delivery the
  receiving system confirmed, or an open, ends the run.

Consent is set with source `provider`, which no merchant import, edit or sync can undo, and only
while the contact still has the address that bounced. Each kind counts once per delivery
(`bounce_events` is unique on both), in the same statement as the channel's tally, so a report
received twice changes nothing the second time.

A mail is trusted to name its delivery only through a signed bounce address (the envelope
recipient, or the envelope sender a complaint report quotes); a verified webhook's message ids are
trusted too. Mail that changes nothing is kept in `bounce_mail` with the reason.
"""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from app.channels import catalogue, sendgrid, ses
from app.channels.bounce_reports import (
    COMPLAINT,
    DELIVERED,
    DROPPED,
    HARD,
    SOFT,
    Feedback,
    Report,
    read_mail,
    status_in,
    storable,
)
from app.config import Settings
from app.errors import Forbidden, HeraldError, NotFound, TryLater, Unauthorized
from app.extensions import db
from app.models import BounceMail, BounceStreak, Campaign, Delivery
from app.security.bounce_addresses import bounce_addresses
from app.services import contacts, suppressions, webhook_events
from app.services.delivery_ledger import ERROR_MAX
from app.services.transactions import transaction
from app.sources.normalize import normalize_email

log = logging.getLogger(__name__)

PROVIDER = "provider"
RETRY_AFTER = "60"  # seconds a provider is asked to wait before sending a report again
_MESSAGE_ID = re.compile(r"<?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@([^>\s]+)>?")
_SIGNING_CERTIFICATES = ses.SigningCertificates()


class NotYet(Exception):
    """The delivery's outcome is still being recorded by its sender: the report must come again
    later (an SMTP 451, an HTTP 503), or its change would be overwritten."""


def _settings() -> Settings:
    return current_app.config["HERALD_SETTINGS"]


# --- Where reports arrive ---------------------------------------------------------------------

def receive_mail(mail_from: str, recipients: Sequence[str], raw: bytes) -> str | None:
    """Apply one mail received for the bounce domain, or keep it with the reason it changed nothing
    (returned). Raises NotYet, having kept nothing, when its delivery is still being sent."""
    report = read_mail(raw)
    with transaction():
        reason = report.problem or _apply_report(report, "mail", envelope=recipients)
        if reason is not None:
            db.session.add(BounceMail(mail_from=storable(mail_from), recipients=[storable(r) for r in recipients],
                                      raw=raw, reason=storable(reason)))
    return reason


def ses_webhook(body: bytes) -> None:
    """An Amazon SNS message: a subscription to confirm, or an SES notification to apply — once it
    is proven to come from SNS for a topic SES_SNS_TOPIC_ARNS names. Otherwise 403, nothing changes."""
    settings = _settings()
    try:
        message = ses.load_message(body)
    except ses.MalformedMessage as exc:
        raise HeraldError(str(exc)) from exc
    if message.get("TopicArn") not in settings.ses_sns_topic_arns:
        raise Forbidden("The message is not from an Amazon SNS topic Herald subscribes to.")
    try:
        ses.verify(message, settings.sns_url_pattern, _SIGNING_CERTIFICATES)
        if message["Type"] == "SubscriptionConfirmation":
            ses.confirm_subscription(message, settings.sns_url_pattern)
            return
    except ses.NotFromSns as exc:
        raise Forbidden(f"The message is not signed by Amazon SNS: {exc}") from exc
    except ses.SnsUnreachable as exc:
        raise TryLater(str(exc), headers={"Retry-After": RETRY_AFTER}) from exc
    if message["Type"] != "Notification":
        return
    try:
        report = ses.parse_notification(message["Message"])
    except ses.MalformedMessage as exc:
        raise HeraldError(str(exc)) from exc
    _apply_webhook([report] if report else [], "ses")


def sendgrid_webhook(body: bytes, signature: str | None, timestamp: str | None) -> None:
    """SendGrid's Event Webhook, applied only when signed with SENDGRID_WEBHOOK_PUBLIC_KEY's pair."""
    if not signature or not timestamp:
        raise Unauthorized(f"The request carries no {sendgrid.SIGNATURE_HEADER} and {sendgrid.TIMESTAMP_HEADER}.")
    if not sendgrid.signature_valid(_settings().sendgrid_webhook_public_key, body, signature, timestamp):
        raise Forbidden("The signature does not match the body.")
    try:
        reports = sendgrid.parse_events(body)
    except sendgrid.MalformedEvents as exc:
        raise HeraldError(str(exc)) from exc
    _apply_webhook(reports, "sendgrid")


def _apply_webhook(reports: list[Report], source: str) -> None:
    try:
        with transaction():
            for report in reports:
                reason = _apply_report(report, source, trust_message_ids=True)
                if reason is not None:
                    log.info("%s report not applied: %s", source, reason, extra={"message_ids": report.message_ids})
    except NotYet as exc:
        raise TryLater("A message it reports on is still being sent.", headers={"Retry-After": RETRY_AFTER}) from exc


def record_gone(channel_type: str, gone: Iterable[tuple[uuid.UUID, str]]) -> None:
    """What a provider called gone for good at send time, by (delivery, address): a push
    subscription is removed; an email mailbox the relay refused as unknown (a 5.1.x refusal) is a
    hard bounce of that delivery. The caller commits."""
    gone = list(gone)
    if catalogue.spec(channel_type).address != "email":
        contacts.remove_gone_addresses(channel_type, [address for _, address in gone])
        return
    for delivery_id, address in gone:
        row = _delivery(delivery_id)
        if row is not None:
            error = row.error or "The relay refused the mailbox."
            _apply(row, Feedback(HARD, address, status_in(error), error), "send")


def end_streak_of(delivery_id: uuid.UUID) -> None:
    """The delivery's email was opened: its contact's soft bounces are no longer in a row. No commit."""
    contact_id = sa.select(Delivery.contact_id).where(Delivery.id == delivery_id, Delivery.channel_type == "email")
    db.session.execute(sa.delete(BounceStreak).where(BounceStreak.contact_id == contact_id.scalar_subquery()))


# --- Kept mail, for an operator (`flask bounces unparsed`) -----------------------------------------

KEPT_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


@dataclass(frozen=True)
class KeptMail:
    id: uuid.UUID
    received_at: datetime
    mail_from: str
    recipients: list[str]
    reason: str
    headers: dict[str, str]  # KEPT_HEADERS the mail has, as written


def kept_mail(limit: int = 50) -> list[KeptMail]:
    """The newest mail that changed nothing, with the headers an operator recognises it by."""
    rows = db.session.execute(sa.select(BounceMail).order_by(BounceMail.received_at.desc(), BounceMail.id)
                              .limit(limit)).scalars().all()
    return [KeptMail(row.id, row.received_at, row.mail_from, row.recipients, row.reason, _headers(row.raw))
            for row in rows]


def kept_mail_raw(mail_id: uuid.UUID) -> bytes:
    raw = db.session.scalar(sa.select(BounceMail.raw).where(BounceMail.id == mail_id))
    if raw is None:
        raise NotFound("No kept bounce mail has this id (retention deletes it after BOUNCE_MAIL_RETENTION_DAYS).")
    return raw


def _headers(raw: bytes) -> dict[str, str]:
    parsed = BytesHeaderParser(policy=default_policy).parsebytes(raw)
    found = {}
    for name in KEPT_HEADERS:
        try:
            value = parsed.get(name)
        except Exception:  # noqa: BLE001  (a malformed header of mail kept because it was unreadable)
            value = None
        if value is not None:
            found[name] = storable(" ".join(str(value).split()))
    return found


# --- Applying ---------------------------------------------------------------------------------

def _apply_report(report: Report, source: str, envelope: Sequence[str] = (),
                  trust_message_ids: bool = False) -> str | None:
    """Apply the report to the delivery it names; the reason when it changes nothing."""
    delivery_id = _named_delivery(report, envelope, trust_message_ids)
    if delivery_id is None:
        return "no signed bounce address or known message id names a delivery"
    row = _delivery(delivery_id)
    if row is None:
        return "the delivery it names no longer exists"
    for feedback in _about(report.feedback, row.address):
        _apply(row, feedback, source)
    return None


def _named_delivery(report: Report, envelope: Sequence[str], trust_message_ids: bool) -> uuid.UUID | None:
    addresses = bounce_addresses()
    if addresses is not None:
        for address in [*envelope, *report.bounce_addresses]:
            found = addresses.delivery_id(address)
            if found is not None:
                return found
    if trust_message_ids:
        for message_id in report.message_ids:
            found = _by_message_id(message_id)
            if found is not None:
                return found
    return None


def _by_message_id(message_id: str) -> uuid.UUID | None:
    """Herald's own Message-ID (`<delivery id@public host>`, recorded or still being sent), else a
    provider's id recorded on a delivery."""
    own = _MESSAGE_ID.fullmatch(message_id.strip())
    if own and own.group(2).lower() == (urlsplit(_settings().public_base_url).hostname or "herald"):
        return uuid.UUID(own.group(1))
    return db.session.scalar(sa.select(Delivery.id).where(Delivery.channel_type == "email",
                                                          Delivery.provider_message_id == message_id).limit(1))


def _delivery(delivery_id: uuid.UUID) -> Any:
    """The email delivery's row (id, channel, contact, status, address, error), or None."""
    return db.session.execute(
        sa.select(Delivery.id, Delivery.channel_id, Delivery.contact_id, Delivery.status, Delivery.address,
                  Delivery.error)
        .where(Delivery.id == delivery_id, Delivery.channel_type == "email")
    ).first()


def _about(feedback: list[Feedback], address: str | None) -> list[Feedback]:
    """The feedback about the delivery's recipient; all of it when none names them (a forwarded
    address bounces under its new name)."""
    mine = [f for f in feedback if f.recipient and address and f.recipient.lower() == address.lower()]
    return mine or feedback


def _apply(row: sa.Row[Any], feedback: Feedback, source: str) -> None:
    if feedback.kind == DELIVERED:
        _end_streak(row.contact_id)
        return
    if row.status in ("queued", "sending"):
        raise NotYet(str(row.id))
    if not _record_event(row, feedback.kind, source, feedback.status, feedback.diagnostic):
        return  # reported before: counted and applied then
    if feedback.kind == COMPLAINT:
        _set_consent(row, "complained")
        return
    if feedback.kind == DROPPED:
        _fail(row.id, feedback.diagnostic)
        if feedback.suppress:
            _set_consent(row, feedback.suppress)
        return
    if feedback.final:
        _fail(row.id, feedback.diagnostic)
    if feedback.kind == HARD:
        _set_consent(row, "bounced")
        _end_streak(row.contact_id)
    elif feedback.kind == SOFT and _soft_streak(row) >= _settings().bounce_soft_limit:
        limit = _settings().bounce_soft_limit
        diagnostic = f"{limit} soft bounces in a row; the last: {feedback.diagnostic}"
        if _record_event(row, HARD, source, feedback.status, diagnostic):
            _set_consent(row, "bounced")
        _end_streak(row.contact_id)


# One statement: the event, and the channel's tally with it; a row back only when the event is new.
_RECORD = sa.text(
    """
    WITH event AS (
        INSERT INTO bounce_events ("deliveryId", kind, source, status, diagnostic)
        VALUES (:delivery_id, :kind, :source, :status, :diagnostic)
        ON CONFLICT ("deliveryId", kind) DO NOTHING
        RETURNING kind
    )
    INSERT INTO bounce_counts AS c ("channelId", "bouncedCount", "softBouncedCount", "complainedCount")
    SELECT CAST(:channel_id AS uuid), (kind = 'bounce')::int, (kind = 'soft_bounce')::int, (kind = 'complaint')::int
    FROM event
    ON CONFLICT ("channelId") DO UPDATE SET
        "bouncedCount" = c."bouncedCount" + excluded."bouncedCount",
        "softBouncedCount" = c."softBouncedCount" + excluded."softBouncedCount",
        "complainedCount" = c."complainedCount" + excluded."complainedCount",
        "updatedAt" = now()
    RETURNING c."channelId"
    """
)


def _record_event(row: sa.Row[Any], kind: str, source: str, status: str | None, diagnostic: str) -> bool:
    recorded = db.session.execute(_RECORD, {
        "delivery_id": row.id, "channel_id": str(row.channel_id), "kind": kind, "source": source,
        "status": status, "diagnostic": storable(diagnostic)[:ERROR_MAX] or None}).first()
    return recorded is not None


def _fail(delivery_id: uuid.UUID, diagnostic: str) -> None:
    """The message did not arrive. Only a row that went out moves; its counters stay."""
    failed = db.session.scalars(
        sa.update(Delivery).where(Delivery.id == delivery_id, Delivery.status.in_(("sent", "delivered", "unknown")))
        .values(status="failed", error=storable(diagnostic or "Bounced.")[:ERROR_MAX], updated_at=sa.func.now())
        .returning(Delivery.id).execution_options(synchronize_session=False)
    ).all()
    webhook_events.message_events("message.failed", failed)


def _set_consent(row: sa.Row[Any], value: str) -> None:
    """The address goes on the merchant's suppression list (`bounced`, `complained`, `unsubscribed`), which holds
    the email consent of whoever has it, now or later (app.services.suppressions)."""
    address = normalize_email(row.address) if row.address else None
    if address is None:
        return
    user_id = db.session.scalar(sa.select(Campaign.user_id).join(Delivery, Delivery.campaign_id == Campaign.id)
                                .where(Delivery.id == row.id))
    if user_id is not None:
        suppressions.add_entries(user_id, [("email", address, value)])
        if value == "bounced":
            webhook_events.emit(user_id, "contact.bounced", {
                "contactId": row.contact_id, "channel": "email", "address": address, "deliveryId": row.id})


_STREAK = sa.text(
    """
    INSERT INTO bounce_streaks AS s ("contactId", address, "softBounces") VALUES (:contact_id, :address, 1)
    ON CONFLICT ("contactId") DO UPDATE SET
        "softBounces" = CASE WHEN s.address = excluded.address THEN s."softBounces" + 1 ELSE 1 END,
        address = excluded.address, "updatedAt" = now()
    RETURNING "softBounces"
    """
)


def _soft_streak(row: sa.Row[Any]) -> int:
    """The contact's soft bounces in a row, this one counted (a new address starts again)."""
    if row.contact_id is None or not row.address:
        return 0
    return int(db.session.scalar(_STREAK, {"contact_id": row.contact_id, "address": row.address.lower()}) or 0)


def _end_streak(contact_id: uuid.UUID | None) -> None:
    if contact_id is not None:
        db.session.execute(sa.delete(BounceStreak).where(BounceStreak.contact_id == contact_id))
