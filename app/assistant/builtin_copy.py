"""The editable copy the built-in assistant writes into drafts: campaign channels and flow steps.

Each config passes its channel's validation as it is, and is meant to be edited: the sender is a
placeholder the answer asks the merchant to replace, and WhatsApp uses Meta's sample template.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from app.channels.configs import PUSH_TITLE_MAX

# The merchant's own sender is not known here; the answer asks them to replace this one.
PLACEHOLDER_SENDER = "hello@example.com"
PLACEHOLDER_FROM_NAME = "Your store"
# Meta's sample template exists on every WhatsApp Business account; real sends need the merchant's own.
WHATSAPP_TEMPLATE, WHATSAPP_LANGUAGE = "hello_world", "en_US"
GREETING = "Hi {{ contact.firstName or 'there' }}"
SMS_OPT_OUT = "Reply STOP to opt out."
THEMES = {  # subject, sentence after the greeting
    "abandoned": ("You left something behind", "your cart is still waiting. Come back and finish your order!"),
    "browsed": ("Still thinking it over?", "the products you looked at are still here. Take another look!"),
    "winback": ("We miss you", "it's been a while. Come and see what's new!"),
    "thanks": ("Thank you for shopping with us", "thanks for your order! We hope you love it."),
    "welcome": ("Welcome!", "thanks for joining us. Here's what's new in the store."),
    "news": ("News from us", "we have something new for you. Come and take a look!"),
}


@dataclass(frozen=True)
class Copy:
    subject: str
    text: str
    generated: bool  # False when the merchant dictated the message, which is then used verbatim


def copy_for(theme: str, topic: str | None = None, message: str | None = None) -> Copy:
    subject, sentence = THEMES[theme]
    if topic:
        subject = topic[:1].upper() + topic[1:]
        sentence = f"{topic} is here. Come and take a look!"
    if message:
        return Copy(subject, message, generated=False)
    return Copy(subject, f"{GREETING}, {sentence}", generated=True)


def channel_config(channel: str, copy: Copy) -> dict[str, Any]:
    """A config that passes the channel's validation, for the merchant to edit."""
    if channel == "email":
        return {"fromEmail": PLACEHOLDER_SENDER, "fromName": PLACEHOLDER_FROM_NAME, "subject": copy.subject,
                # The text is a template: only markup is escaped, Jinja's quotes must survive.
                "html": f"<p>{html.escape(copy.text, quote=False)}</p>", "text": copy.text}
    if channel == "sms":
        return {"body": f"{copy.text} {SMS_OPT_OUT}" if copy.generated else copy.text}
    if channel == "push":
        return {"title": copy.subject[:PUSH_TITLE_MAX], "body": copy.text}
    return {"templateName": WHATSAPP_TEMPLATE, "language": WHATSAPP_LANGUAGE, "parameters": []}
