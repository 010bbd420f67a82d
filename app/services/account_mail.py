"""Account mail (verification, duplicate-registration notice, a sender's confirmation link), composed here
and sent over SMTP."""
from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import urlencode

from flask import current_app

from app.channels.smtp import open_smtp
from app.config import Settings
from app.models import User


def _settings() -> Settings:
    return current_app.config["HERALD_SETTINGS"]


def verification_link(token: str) -> str:
    # Always from configuration: a Host header chosen by an attacker must never shape this link.
    return f"{_settings().public_base_url}/verify-email?{urlencode({'token': token})}"


def sender_confirmation_link(token: str) -> str:
    return f"{_settings().public_base_url}/confirm-sender?{urlencode({'token': token})}"


def _greeting(user: User) -> str:
    return f"Hello {user.first_name}," if user.first_name else "Hello,"


def compose_verification(user: User, token: str) -> EmailMessage:
    link = verification_link(token)
    message = _base_message(user.email, "Confirm your email address for Herald")
    message.set_content(
        f"{_greeting(user)}\n\nConfirm your email address by opening this link within 48 hours:\n\n{link}\n\n"
        "If you did not create a Herald account, ignore this message.\n"
    )
    return message


def compose_duplicate_registration_notice(user: User) -> EmailMessage:
    message = _base_message(user.email, "Someone tried to register with your email address")
    message.set_content(
        f"{_greeting(user)}\n\nSomeone tried to create a Herald account with this address, which already has "
        "one. If it was you, log in instead (you can reset your password from the login page). "
        "Otherwise, no action is needed.\n"
    )
    return message


def compose_sender_confirmation(address: str, user: User, token: str) -> EmailMessage:
    """To the address a merchant wants to send campaigns from: only its owner can confirm it."""
    merchant = f"{user.company_name} ({user.email})" if user.company_name else user.email
    message = _base_message(address, "Confirm this address as a sender on Herald")
    message.set_content(
        f"Hello,\n\n{merchant} asked to send email from {address} through Herald. If that is you, or "
        f"someone you work with, confirm it by opening this link within 48 hours:\n\n"
        f"{sender_confirmation_link(token)}\n\nOtherwise, ignore this message: nothing will be sent from "
        "this address.\n"
    )
    return message


def _base_message(to: str, subject: str) -> EmailMessage:
    settings = _settings()
    message = EmailMessage()
    message["From"] = settings.mail_from  # one address, checked and quoted where needed at start-up
    message["To"] = to
    message["Subject"] = subject
    # RFC 5322 requires Date; relays that add a missing one are not to be relied on.
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(settings.mail_from)[1].rpartition("@")[2])
    return message


def deliver(message: EmailMessage) -> None:
    client = open_smtp(_settings().smtp_url)
    try:
        client.send_message(message)
    finally:
        client.quit()
