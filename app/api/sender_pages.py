"""The page a sender's confirmation mail links to (`PUBLIC_BASE_URL/confirm-sender?token=…`).

As for account verification, opening the link changes nothing (mail scanners fetch every link they
see): the page's button posts the token back, and only that verifies the address.
"""
from __future__ import annotations

from html import escape

from flask import Response, request

from app.api.blueprint import HeraldBlueprint
from app.api.html_pages import page
from app.errors import NotFound
from app.services import senders

blp = HeraldBlueprint("sender_pages", __name__, description="The page sender confirmation mail links to (public)")


@blp.errorhandler(NotFound)
def unknown_link(exc: NotFound) -> Response:
    return page("Link not valid", f"<p>{escape(exc.message)}</p>", status=404)


@blp.errorhandler(senders.LinkExpired)
def expired_link(exc: senders.LinkExpired) -> Response:
    return page("Link expired", f"<p>{escape(exc.message)}</p>", status=410)


@blp.route("/confirm-sender", methods=["GET"])
def confirm_sender_page() -> Response:
    """A page whose button confirms the address; opening it confirms nothing."""
    token = request.args.get("token", "")
    if not token:
        return page("Link not valid", "<p>This confirmation link is incomplete.</p>", status=404)
    form = ("<p>Confirm that email may be sent from this address through Herald.</p>"
            f'<form method="post"><input type="hidden" name="token" value="{escape(token)}">'
            '<button type="submit">Confirm this sender</button></form>')
    return page("Confirm a sender address", form)


@blp.route("/confirm-sender", methods=["POST"])
def confirm_sender() -> Response:
    """The page's form: the address becomes a verified sender (404 unknown link, 410 expired)."""
    sender = senders.confirm(request.form.get("token", ""))
    return page("Sender confirmed", f"<p>{escape(sender.email or '')} is a verified sender. You can close this page.</p>")
