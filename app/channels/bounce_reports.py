"""What mailbox providers say back about the email Herald sent: bounces, delays, complaints.

Pure functions, no database: the `bounces` SMTP server hands received mail to `read_mail`, the
provider adapters (app.channels.ses, app.channels.sendgrid) read their webhooks into the same
`Feedback`, and app.services.bounces applies it.

Mail is read as RFC 3464 delivery status notifications (multipart/report; report-type=
delivery-status: Action failed or delayed, Status 5.x.x a hard bounce, 4.x.x a soft one) and RFC
5965 complaint reports (multipart/report; report-type=feedback-report); anything else goes through
flufl.bounce, which knows the common non-standard bounce formats (its permanent failures are hard,
its temporary ones, delay warnings, soft).
"""
from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

HARD = "bounce"
SOFT = "soft_bounce"
COMPLAINT = "complaint"
DELIVERED = "delivered"  # the receiving system confirmed delivery: a soft-bounce streak ends
# The provider did not send the message at all (its own suppression list, the content): the delivery
# fails; it counts as no bounce or complaint, but may put the address on the merchant's list.
DROPPED = "dropped"
DIAGNOSTIC_MAX = 2000
_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_STATUS_IN_TEXT = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# Complaint feedback types (RFC 5965 §7.3): `not-spam` and `virus` say nothing against the sender.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})


@dataclass(frozen=True)
class Feedback:
    """One recipient's outcome, as a report or a provider states it."""

    kind: str  # HARD, SOFT, COMPLAINT, DROPPED or DELIVERED
    recipient: str | None = None
    status: str | None = None  # the enhanced status code (RFC 3463), e.g. 5.1.1
    diagnostic: str = ""
    final: bool = True  # False: a delay warning; the message may still arrive
    suppress: str | None = None  # DROPPED: the suppression reason the provider's own list implies


@dataclass(frozen=True)
class Report:
    """Feedback and what names the message it is about. Only a signed bounce address is trusted
    in mail; a verified provider webhook's message ids are trusted too."""

    feedback: list[Feedback]
    bounce_addresses: list[str] = field(default_factory=list)  # envelope senders the report names
    message_ids: list[str] = field(default_factory=list)
    problem: str | None = None  # why nothing could be read from it


def enhanced_status(text: str | None) -> str | None:
    """The enhanced status code a status field or an SMTP reply starts with ("5.1.1 User unknown")."""
    found = _STATUS.match(text or "")
    return ".".join(found.groups()) if found else None


def status_in(text: str | None) -> str | None:
    """The first enhanced status code anywhere in a text ("RCPT TO answered 550 5.1.1 ...")."""
    found = _STATUS_IN_TEXT.search(text or "")
    return found.group(1) if found else None


def _kind(status: str | None) -> str:
    return SOFT if status and status.startswith("4") else HARD


def storable(text: str) -> str:
    """Text PostgreSQL can keep: header bytes the parser carried as surrogates decoded as UTF-8 (or
    replaced), and no NUL."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "\ufffd")


def _clip(text: str) -> str:
    return storable(" ".join(text.split()))[:DIAGNOSTIC_MAX]


def read_mail(raw: bytes) -> Report:
    """Read one received mail; a `problem` says why nothing could be (never raises)."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        return _read(message)
    except Exception as exc:  # noqa: BLE001 — a mail nobody can read is kept, never lost
        return Report([], problem=f"unreadable mail: {type(exc).__name__}: {exc}"[:DIAGNOSTIC_MAX])


def _read(message: Message) -> Report:
    report_type = (message.get_param("report-type") or "") if message.get_content_type() == "multipart/report" else ""
    addresses, message_ids = _original_envelope(message)
    if str(report_type).lower() == "delivery-status":
        feedback = _delivery_status(message)
    elif str(report_type).lower() == "feedback-report":
        feedback, named = _feedback_report(message)
        addresses = named + addresses
    else:
        feedback = _non_standard(message)
    if not feedback:
        return Report([], addresses, message_ids,
                      problem="not a delivery status notification, a complaint report or a known bounce format")
    return Report(feedback, addresses, message_ids)


def _delivery_status(message: Message) -> list[Feedback]:
    feedback = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        # The first block is about the message, the rest one per recipient.
        for block in _messages(part)[1:]:
            found = _recipient_block(block)
            if found is not None:
                feedback.append(found)
    return feedback


def _recipient_block(block: Message) -> Feedback | None:
    action = str(block.get("Action", "")).strip().lower()
    status = enhanced_status(str(block.get("Status", "")))
    recipient = parseaddr(str(block.get("Final-Recipient", "")).partition(";")[2])[1] or None
    diagnostic = _clip(str(block.get("Diagnostic-Code", "")).partition(";")[2] or f"Status {status or 'unknown'}")
    if action.startswith(("failed", "failure", "error")):
        return Feedback(_kind(status), recipient, status, diagnostic)
    if action.startswith("delayed"):
        return Feedback(SOFT, recipient, status, diagnostic, final=False)
    if action.startswith(("delivered", "relayed")):
        return Feedback(DELIVERED, recipient, status, diagnostic)
    return None


def _feedback_report(message: Message) -> tuple[list[Feedback], list[str]]:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _fields(part)
        feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
        named = [address for _, address in getaddresses([str(v) for v in fields.get_all("Original-Mail-From", [])])]
        if feedback_type not in COMPLAINT_TYPES:
            return [], named
        recipient = parseaddr(str(fields.get("Original-Rcpt-To", "")))[1] or None
        agent = str(fields.get("User-Agent", "")).strip()
        diagnostic = _clip(f"Complaint ({feedback_type})" + (f" reported by {agent}" if agent else ""))
        return [Feedback(COMPLAINT, recipient, None, diagnostic)], named
    return [], []


def _messages(part: Message) -> list[Message]:
    """The messages a message/* part holds, as the parser gives them."""
    payload = part.get_payload()
    return [item for item in payload if isinstance(item, Message)] if isinstance(payload, list) else []


def _fields(part: Message) -> Message:
    """A message/feedback-report part's fields (the parser gives them as a message of headers)."""
    held = _messages(part)
    if held:
        return held[0]
    return email.message_from_string(str(part.get_payload() or ""), policy=email.policy.compat32)


def _original_envelope(message: Message) -> tuple[list[str], list[str]]:
    """The Return-Path and Message-ID of the original message a report returns (whole, or its
    headers), when it carries one."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and _messages(part):
            original = _messages(part)[0]
        elif kind == "text/rfc822-headers":
            original = email.message_from_string(str(part.get_payload(decode=False) or ""),
                                                 policy=email.policy.compat32)
        else:
            continue
        return ([parseaddr(str(v))[1] for v in original.get_all("Return-Path", [])],
                [str(v).strip() for v in original.get_all("Message-ID", [])])
    return [], []


def _non_standard(message: Message) -> list[Feedback]:
    temporary, permanent = all_failures(message)
    subject = _clip(str(message.get("Subject", "")) or "a bounce without a subject")
    return ([Feedback(HARD, address.decode("ascii", "replace"), None, subject) for address in sorted(permanent)]
            + [Feedback(SOFT, address.decode("ascii", "replace"), None, subject, final=False)
               for address in sorted(temporary)])
