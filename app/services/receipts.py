"""Providers' later word on the messages they accepted: each channel's adapter verifies and parses
its callbacks (app.channels.sms, app.channels.whatsapp); the ledger moves here, each receipt once,
however often or late it comes."""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from flask import current_app

from app.channels import sms, whatsapp
from app.channels.base import Receipt
from app.errors import Forbidden
from app.extensions import db
from app.models import Delivery
from app.services import contacts, provider_accounts
from app.services import delivery_ledger as ledger
from app.services.transactions import transaction


def twilio_status_callback(params: list[tuple[str, str]], signature: str | None) -> None:
    """A Twilio status callback, applied only when signed with the auth token of the account its
    AccountSid names, over the URL we gave Twilio (PUBLIC_BASE_URL's, never the caller's Host)."""
    form = dict(params)
    account = provider_accounts.account_by_ref("sms", form.get("AccountSid", ""))
    token = account[1].get("authToken") if account else None
    url = sms.status_callback_url(current_app.config["HERALD_SETTINGS"])
    if not sms.callback_signed(token, url, params, signature):
        raise Forbidden("The request is not signed by the Twilio account it names.")
    apply("sms", sms.parse_status_callback(form))


def whatsapp_status_webhook(raw_body: bytes, signature: str | None, app_secret: str) -> None:
    """Meta's webhook, verified (X-Hub-Signature-256 over the raw body) before it is read."""
    if not whatsapp.signature_valid(raw_body, signature, app_secret):
        raise Forbidden("The X-Hub-Signature-256 header does not match the body.")
    apply("whatsapp", whatsapp.parse_status_webhook(raw_body))


def apply(channel_type: str, receipts: Iterable[Receipt]) -> None:
    """Move the ledger (and counters) for each receipt, in one transaction; a recipient the
    provider says opted out becomes `unsubscribed`, set by the provider."""
    with transaction():
        for receipt in receipts:
            ledger.apply_provider_status(channel_type, receipt.message_id, receipt.status, receipt.error)
            if receipt.opted_out:
                _record_opt_out(channel_type, receipt.message_id)


def _record_opt_out(channel_type: str, message_id: str) -> None:
    contact_id = db.session.scalar(
        sa.select(Delivery.contact_id).where(Delivery.channel_type == channel_type,
                                             Delivery.provider_message_id == message_id).limit(1))
    if contact_id is not None:
        contacts.record_opt_out(contact_id, [channel_type], source="provider")
