"""Verified senders: the addresses and domains a merchant may send email from.

- An **address** is verified by a link mailed to it (a worker mints the token, stores its SHA-256
  with a 48-hour expiry and mails it; the confirmation page's button uses it).
- A **domain** is verified by its DNS records (app.services.sender_dns): an SPF include when
  SENDER_SPF_INCLUDE is set, DKIM with a key Herald makes for the domain (sealed at rest), and
  DMARC. A check is authoritative: the domain is verified while the last one found them all. Mail
  from a verified domain is DKIM-signed with its key (`signing_key`, app.channels.email).

`require_verified` is the one rule every sending thing obeys (a campaign at launch or schedule, a
flow at activation): each email channel's from-address must be verified, as itself or through its
domain, and must not be a placeholder such as the assistant's `hello@example.com`.
"""
from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import task_names as tasks
from app.channels import catalogue
from app.config import Settings
from app.errors import Conflict, HeraldError, NotFound, TooManyRequests, TryLater, ValidationFailed
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import Campaign, CampaignChannel, User, utcnow
from app.models.senders import Sender
from app.security import dkim_keys, opaque_tokens, secret_box
from app.services import account_mail, sender_dns
from app.services.transactions import transaction

CONFIRMATION_TTL = timedelta(hours=48)
# How long a worker may take between minting a link's token and recording its mail sent before
# another may send it instead (SMTP's own timeout is 30 s).
CONFIRMATION_CLAIM_LEASE = timedelta(minutes=5)
RESEND_INTERVAL = timedelta(minutes=1)
# Campaigns whose senders must stay verified while they wait or send.
ACTIVE_STATUSES = ("scheduled", "running", "paused")
# Reserved for documentation and tests (RFC 2606, RFC 6761): never anyone's real sender.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net")
PLACEHOLDER_TLDS = ("test", "invalid", "example")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class LinkExpired(HeraldError):
    status, code = 410, "link_expired"


@dataclass(frozen=True)
class SendingChannel:
    """A channel about to send: where its config sits in the caller's terms (the path of its
    errors, e.g. ("channels", "email") for a campaign's, () on a route about the channel itself),
    its type and its config."""

    path: tuple[str | int, ...]
    channel_type: str
    config: Mapping[str, Any]


def _settings() -> Settings:
    return current_app.config["HERALD_SETTINGS"]


# --- Addresses and domains as written ------------------------------------------------------------

def _ascii_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def normalized_address(address: str) -> tuple[str, str]:
    """(address, domain) as senders are compared: lower-cased, the domain in its ASCII form."""
    local, _, domain = address.strip().rpartition("@")
    domain = _ascii_domain(domain)
    return f"{local.lower()}@{domain}", domain


def is_placeholder(domain: str) -> bool:
    domain = _ascii_domain(domain)
    return (domain.rpartition(".")[2] in PLACEHOLDER_TLDS
            or any(domain == p or domain.endswith("." + p) for p in PLACEHOLDER_DOMAINS))


def _placeholder_problem(what: str) -> str:
    return f"{what} is a placeholder (reserved for examples): send from your own address or domain."


# --- Managing senders ----------------------------------------------------------------------------

def senders_query(user_id: uuid.UUID) -> sa.Select[Sender]:
    return sa.select(Sender).where(Sender.user_id == user_id).order_by(Sender.created_at.desc(), Sender.id)


def get_sender(user_id: uuid.UUID, sender_id: uuid.UUID, lock: bool = False) -> Sender:
    stmt = sa.select(Sender).where(Sender.id == sender_id, Sender.user_id == user_id)
    sender = db.session.scalar(stmt.with_for_update() if lock else stmt)
    if sender is None:
        raise NotFound("Sender not found.")
    return sender


def add_address(user_id: uuid.UUID, email: str) -> Sender:
    """A pending address; a worker mails it the confirmation link."""
    address, domain = normalized_address(email)
    if is_placeholder(domain):
        raise ValidationFailed(_placeholder_problem(address), errors={"email": [_placeholder_problem(address)]})
    with transaction():
        sender = _insert(Sender(user_id=user_id, kind="address", email=address, status="pending",
                                confirmation_requested_at=utcnow()), f"{address} is one of your senders already.")
        enqueue_after_commit(tasks.SEND_SENDER_CONFIRMATION, str(sender.id))
    return sender


def add_domain(user_id: uuid.UUID, domain: str) -> Sender:
    """A pending domain with a new DKIM key; the answer shows the records to publish."""
    name = _ascii_domain(domain)
    if not _DOMAIN.fullmatch(name):
        raise ValidationFailed("Not a domain name.", errors={"domain": ["Must be a domain name, such as shop.com."]})
    if is_placeholder(name):
        raise ValidationFailed(_placeholder_problem(name), errors={"domain": [_placeholder_problem(name)]})
    key = dkim_keys.new_key()
    with transaction():
        return _insert(Sender(user_id=user_id, kind="domain", domain=name, status="pending",
                              dkim_selector=dkim_keys.new_selector(_settings().dkim_selector_prefix),
                              dkim_public_key=key.public_key, dkim_private_key=secret_box.encrypt(key.private_pem)),
                       f"{name} is one of your senders already.")


def _insert(sender: Sender, taken: str) -> Sender:
    db.session.add(sender)
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict(taken) from None
    return sender


def add_verified_address(user_id: uuid.UUID, email: str) -> Sender:
    """An address taken as verified without a confirmation mail: for operators and the demo."""
    address, _ = normalized_address(email)
    with transaction():
        sender = db.session.scalar(sa.select(Sender).where(Sender.user_id == user_id, Sender.email == address))
        if sender is None:
            sender = _insert(Sender(user_id=user_id, kind="address", email=address), address)
        sender.status, sender.verified_at = "verified", sender.verified_at or utcnow()
    return sender


def delete_sender(user_id: uuid.UUID, sender_id: uuid.UUID) -> None:
    """Remove a sender, unless a scheduled, running or paused campaign would lose its verified
    sender by it (409 naming them)."""
    with transaction():
        sender = get_sender(user_id, sender_id, lock=True)
        db.session.delete(sender)
        db.session.flush()
        stranded = [name for name, channels in _active_campaigns(user_id) if _problems(user_id, channels)]
        if stranded:
            raise Conflict(f"Campaigns waiting or sending from this sender would lose it: {', '.join(stranded)}. "
                           "Cancel them, or change their sender while they are scheduled, first.")


def _active_campaigns(user_id: uuid.UUID) -> list[tuple[str, list[SendingChannel]]]:
    rows = db.session.execute(
        sa.select(Campaign.id, Campaign.name, CampaignChannel.channel_type, CampaignChannel.config)
        .join(CampaignChannel, CampaignChannel.campaign_id == Campaign.id)
        .where(Campaign.user_id == user_id, Campaign.status.in_(ACTIVE_STATUSES))
        .order_by(Campaign.created_at, Campaign.id))
    campaigns: dict[uuid.UUID, tuple[str, list[SendingChannel]]] = {}
    for row in rows:
        channels = campaigns.setdefault(row.id, (row.name, []))[1]
        channels.append(SendingChannel(("channels", row.channel_type), row.channel_type, row.config))
    return list(campaigns.values())


def campaign_channels(campaign_id: uuid.UUID) -> list[SendingChannel]:
    rows = db.session.execute(sa.select(CampaignChannel.channel_type, CampaignChannel.config)
                              .where(CampaignChannel.campaign_id == campaign_id))
    return [SendingChannel(("channels", row.channel_type), row.channel_type, row.config) for row in rows]


# --- Confirming an address -----------------------------------------------------------------------

def resend_confirmation(user_id: uuid.UUID, sender_id: uuid.UUID) -> Sender:
    """A new link for a pending address (earlier links stop working); one a minute."""
    with transaction():
        sender = get_sender(user_id, sender_id, lock=True)
        if sender.kind != "address" or sender.status != "pending":
            raise Conflict("Only an address waiting for confirmation is sent a link.")
        requested = sender.confirmation_requested_at
        if requested is not None and requested + RESEND_INTERVAL > utcnow():
            seconds = math.ceil((requested + RESEND_INTERVAL - utcnow()).total_seconds())
            raise TooManyRequests(f"A link was asked for less than a minute ago; ask again in {seconds} s.",
                                  headers={"Retry-After": str(seconds)})
        sender.token_hash = sender.token_expires_at = sender.confirmation_sent_at = None
        sender.confirmation_requested_at = utcnow()
        enqueue_after_commit(tasks.SEND_SENDER_CONFIRMATION, str(sender.id))
    return sender


def send_confirmation(sender_id: uuid.UUID) -> bool:
    """Mint the token, mail the link, record it sent — once, however often the task runs.

    Three transactions on purpose, as for account verification: the token's hash is committed
    before the mail goes out (so the link works when it arrives, and the mint claims the mail for
    CONFIRMATION_CLAIM_LEASE); the mail goes with no transaction open; then it is recorded sent. A
    refused send releases the claim so the retry mails a fresh link.
    """
    token = opaque_tokens.new_secret()
    token_hash = opaque_tokens.hash_secret(token)
    with transaction():
        claimed = _claim_confirmation(sender_id, token_hash)
        if claimed is None:
            return False
        message = account_mail.compose_sender_confirmation(*claimed, token)
    try:
        account_mail.deliver(message)
    except Exception:
        with transaction():
            db.session.execute(sa.update(Sender).where(Sender.id == sender_id, Sender.token_hash == token_hash,
                                                       Sender.confirmation_sent_at.is_(None))
                               .values(token_hash=None, token_expires_at=None))
        raise
    with transaction():
        db.session.execute(sa.update(Sender).where(Sender.id == sender_id, Sender.token_hash == token_hash)
                           .values(confirmation_sent_at=utcnow()))
    return True


def _claim_confirmation(sender_id: uuid.UUID, token_hash: str) -> tuple[str, User] | None:
    """Give the pending address this token unless its mail was sent or a live claim holds it: the
    address and its merchant. No commit."""
    now = utcnow()
    row = db.session.execute(
        sa.update(Sender)
        .where(Sender.id == sender_id, Sender.kind == "address", Sender.status == "pending",
               Sender.confirmation_sent_at.is_(None),
               sa.or_(Sender.token_hash.is_(None),
                      Sender.token_expires_at < now + CONFIRMATION_TTL - CONFIRMATION_CLAIM_LEASE))
        .values(token_hash=token_hash, token_expires_at=now + CONFIRMATION_TTL)
        .returning(Sender.email, Sender.user_id),
        execution_options={"synchronize_session": False},
    ).first()
    return None if row is None else (cast(str, row.email), db.session.get_one(User, row.user_id))


def confirm(token: str) -> Sender:
    """The link's address becomes verified (opening it again says so). An unknown token: 404; an
    expired one: 410."""
    with transaction():
        sender = db.session.scalar(sa.select(Sender).where(Sender.token_hash == opaque_tokens.hash_secret(token))
                                   .with_for_update()) if token else None
        if sender is None:
            raise NotFound("This confirmation link is not valid: it may have been replaced by a newer one.")
        if sender.status == "verified":
            return sender
        if sender.token_expires_at is None or sender.token_expires_at <= utcnow():
            raise LinkExpired("This confirmation link has expired: ask for a new one "
                              f"(POST /api/v1/senders/{sender.id}/resend).")
        sender.status, sender.verified_at = "verified", utcnow()
    return sender


# --- Checking a domain ---------------------------------------------------------------------------

def records_of(sender: Sender) -> list[sender_dns.Record]:
    assert sender.domain and sender.dkim_selector and sender.dkim_public_key
    return sender_dns.expected_records(sender.domain, sender.dkim_selector, sender.dkim_public_key,
                                       _settings().sender_spf_include)


def dns_records(sender: Sender) -> list[dict[str, Any]]:
    """The domain's records to publish, each with what the last check found (`unchecked` before one)."""
    if sender.kind != "domain" or not sender.dkim_selector or not sender.dkim_public_key:
        return []
    found = {f["purpose"]: f for f in (sender.check_results or {}).get("records", [])}
    return [{"purpose": record.purpose, "type": record.type, "name": record.name, "value": record.value,
             **found.get(record.purpose, {"status": "unchecked", "found": [], "problem": None, "suggested": None})}
            for record in records_of(sender)]


def check_domain(user_id: uuid.UUID, sender_id: uuid.UUID) -> Sender:
    """Look the domain's records up (no transaction open meanwhile) and record what was found:
    verified when every record is right, pending otherwise. 503 when the resolver did not answer."""
    settings = _settings()
    with transaction():
        sender = get_sender(user_id, sender_id)
        if sender.kind != "domain":
            raise Conflict("Only a domain is checked in DNS; an address is confirmed by the link mailed to it.")
        records, public_key = records_of(sender), sender.dkim_public_key or ""
    try:
        findings = sender_dns.check(records, sender_dns.txt_lookup(settings.dns_resolver), public_key,
                                    settings.sender_spf_include)
    except sender_dns.ResolverUnavailable as exc:
        raise TryLater(str(exc), headers={"Retry-After": "30"}) from exc
    ok = all(finding.status == sender_dns.OK for finding in findings)
    with transaction():
        sender = get_sender(user_id, sender_id, lock=True)
        sender.checked_at = utcnow()
        sender.check_results = {"records": [finding.as_json() for finding in findings]}
        sender.status = "verified" if ok else "pending"
        sender.verified_at = (sender.verified_at or utcnow()) if ok else None
    return sender


def signing_key(user_id: uuid.UUID, domain: str) -> dkim_keys.SigningKey | None:
    """The DKIM key of the merchant's verified domain, for signing mail from it; None otherwise."""
    row = db.session.execute(
        sa.select(Sender.dkim_selector, Sender.dkim_private_key)
        .where(Sender.user_id == user_id, Sender.kind == "domain", Sender.domain == _ascii_domain(domain),
               Sender.status == "verified")
    ).first()
    if row is None or not row.dkim_selector or not row.dkim_private_key:
        return None
    return dkim_keys.SigningKey(_ascii_domain(domain), row.dkim_selector,
                                secret_box.decrypt(row.dkim_private_key).encode())


# --- The rule ------------------------------------------------------------------------------------

def require_verified(user_id: uuid.UUID, channels: Iterable[SendingChannel]) -> None:
    """422 unless every email channel sends from a verified address or domain of the merchant
    (and none from a placeholder): the errors name each address at its config path."""
    problems = _problems(user_id, list(channels))
    if problems:
        named = "; ".join(f"{address} ({'.'.join(map(str, path))})" for path, address, _ in problems)
        errors: dict[str, Any] = {}
        for path, _, problem in problems:
            _nest(errors, path, problem)
        raise ValidationFailed(f"Email can only be sent from a verified sender: {named}.", errors=errors)


def _problems(user_id: uuid.UUID, channels: list[SendingChannel]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """(path, address, problem) for each from-address that may not be used."""
    wanted = [(channel.path + where, address) for channel in channels for where, address in _from_addresses(channel)]
    if not wanted:
        return []
    normalized = {address: normalized_address(address) for _, address in wanted}
    known = db.session.execute(
        sa.select(Sender.email, Sender.domain, Sender.status).where(
            Sender.user_id == user_id,
            sa.or_(Sender.email.in_({a for a, _ in normalized.values()}),
                   Sender.domain.in_({d for _, d in normalized.values()})))).all()
    verified = {row.email or row.domain for row in known if row.status == "verified"}
    pending = {row.email or row.domain for row in known if row.status != "verified"}
    problems = []
    for path, given in wanted:
        address, domain = normalized[given]
        if is_placeholder(domain):
            problems.append((path, given, _placeholder_problem(given)))
        elif address not in verified and domain not in verified:
            waiting = " (waiting for confirmation)" if address in pending or domain in pending else ""
            problems.append((path, given, f"{given} is not a verified sender{waiting}: verify the address or its "
                                          f"domain {domain} (POST /api/v1/senders) first."))
    return problems


def _from_addresses(channel: SendingChannel) -> list[tuple[tuple[str | int, ...], str]]:
    """(path within the channel, address) of each From address its messages may carry: the
    config's, and any an A/B variant overrides it with."""
    if catalogue.spec(channel.channel_type).address != "email":
        return []
    config = channel.config
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(config.get("fromEmail"), str):
        found.append((("config", "fromEmail"), config["fromEmail"]))
    variants = (config.get("abTest") or {}).get("variants") or []
    for index, variant in enumerate(variants):
        if isinstance(variant, Mapping) and isinstance(variant.get("fromEmail"), str):
            found.append((("config", "abTest", "variants", index, "fromEmail"), variant["fromEmail"]))
    return found


def _nest(errors: dict[str, Any], path: tuple[str | int, ...], message: str) -> None:
    for part in path[:-1]:
        errors = errors.setdefault(str(part), {})
    errors.setdefault(str(path[-1]), []).append(message)
