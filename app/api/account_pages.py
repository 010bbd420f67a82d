"""The page the verification mail links to (`PUBLIC_BASE_URL/verify-email?token=…`).

Opening the link changes nothing: mail scanners fetch every link they see. The page's button posts the
token back, and only that confirms the address (through the same service as the API's verify route).
"""
from __future__ import annotations

from html import escape

from flask import Response, request

from app.api.blueprint import HeraldBlueprint
from app.api.html_pages import page
from app.api.openapi import answers
from app.services import accounts

blp = HeraldBlueprint("account_pages", __name__, description="The page verification mail links to (public)")

INVALID = "This verification link is invalid, expired or already used."
ASK_AGAIN = ("Log in and ask for a new link (<code>POST /api/v1/auth/verify-email/resend</code>); "
             "each link works once, for 48 hours.")


@blp.errorhandler(accounts.InvalidVerificationToken)
def invalid_link(exc: accounts.InvalidVerificationToken) -> Response:
    return page("Link not valid", f"<p>{escape(exc.message)}</p><p>{ASK_AGAIN}</p>", status=400)


@blp.route("/verify-email", methods=["GET"])
@blp.doc(responses=answers(200, "The page with the confirm button.", "text/html"))
def verify_email_page() -> Response:
    """A page whose button confirms the address; opening it confirms nothing."""
    token = request.args.get("token", "")
    if not token:
        return page("Link not valid", f"<p>{INVALID}</p><p>{ASK_AGAIN}</p>", status=400)
    # No action attribute: the form posts back to this very URL, whatever proxy path it came through.
    form = ('<p>Confirm that this is your email address to finish setting up your Herald account.</p>'
            f'<form method="post"><input type="hidden" name="token" value="{escape(token)}">'
            '<button type="submit">Confirm my email address</button></form>')
    return page("Confirm your email address", form)


@blp.route("/verify-email", methods=["POST"])
@blp.doc(responses=answers(200, "The page saying the address is confirmed.", "text/html"))
def verify_email() -> Response:
    """The page's form: confirms the address (once; a used or expired link answers 400)."""
    user = accounts.verify_email(request.form.get("token", ""))
    return page("Email address confirmed",
                f"<p>{escape(user.email)} is confirmed. You can close this page and launch campaigns.</p>")
