"""Every event type a merchant's webhook endpoints can subscribe to, in one place.

Schemas, the API's documentation and the outbox (app.services.webhook_events) all read EVENT_TYPES;
an unknown type raises, never defaults. Adding one: an entry here, a call to
`webhook_events.emit(...)` in the transaction that makes the change, and a line in the README's
table. Free of imports from the rest of Herald, so models, schemas and services can all read it.
"""
from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "message.sent": "A message was handed to the provider, which accepted it.",
    "message.delivered": "The provider confirmed the message reached the recipient.",
    "message.failed": "A message failed: refused when sent, or reported failed afterwards (a provider's "
                      "receipt, a bounce).",
    "message.opened": "The first open of a message (email pixel, a WhatsApp read receipt, or a first click "
                      "where images were blocked).",
    "message.clicked": "The first click on a tracked link of a message, with its URL.",
    "contact.unsubscribed": "A contact opted out of channels: an unsubscribe link, a STOP reply, or the "
                            "merchant relaying their wish through the API.",
    "contact.bounced": "A contact's email address bounced for good (a hard bounce, or BOUNCE_SOFT_LIMIT soft "
                       "bounces in a row) and is now suppressed.",
    "campaign.completed": "A campaign completed: every message was settled, or it was cancelled.",
    "flow.enrolled": "A contact entered a triggered flow.",
}


class UnknownEventType(LookupError):
    """An event type the catalogue does not hold."""


def check(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise UnknownEventType(f"Unknown webhook event type {event_type!r}.")
    return event_type
