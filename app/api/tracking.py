"""Public tracking routes that sent messages link to: open pixel, click redirect, unsubscribe.

No auth, cookies or CSRF token: the signed token in the path is the credential (RFC 8058 one-click
unsubscribe is a bare POST from the mailbox provider). A forged token answers 404 and counts nothing.
"""
from __future__ import annotations

import base64

from flask import Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.api.blueprint import HeraldBlueprint
from app.api.html_pages import NO_CACHE, invalid_link, page
from app.api.openapi import answers
from app.errors import NotFound
from app.extensions import limiter
from app.services import tracking

# A 1x1 transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
blp = HeraldBlueprint("tracking", __name__, url_prefix="/t", description="Open, click and unsubscribe links (public)")
# Every recipient's mail client and every mailbox provider fetch these: API throttles do not apply.
limiter.exempt(blp)


blp.errorhandler(NotFound)(invalid_link)


@blp.route("/o/<token>", methods=["GET"])
@blp.doc(responses=answers(200, "A 1x1 transparent GIF.", "image/gif"))
def open_pixel(token: str) -> Response:
    """The open pixel: a transparent 1x1 GIF; the delivery's first open is counted."""
    tracking.record_open(token, count=request.method != "HEAD")
    return Response(PIXEL, mimetype="image/gif", headers=NO_CACHE)


@blp.route("/c/<token>", methods=["GET"])
@blp.doc(responses=answers(302, "To the link's URL (`Location`)."))
def click(token: str) -> BaseResponse:
    """A tracked link: 302 to the URL stored for the message's channel; the first click is counted."""
    response = redirect(tracking.record_click(token, count=request.method != "HEAD"), code=302)
    response.headers.update({**NO_CACHE, "Referrer-Policy": "no-referrer"})
    return response


@blp.route("/u/<token>", methods=["GET"])
@blp.doc(responses=answers(200, "The confirmation page.", "text/html"))
def unsubscribe_page(token: str) -> Response:
    """A confirmation page; nothing changes until its form is posted (link scanners fetch GETs)."""
    tracking.check_unsubscribe_link(token)
    # No action attribute: the form posts back to this very URL, whatever proxy path it came through.
    form = ('<p>Stop receiving these messages?</p><form method="post">'
            '<button type="submit">Unsubscribe</button></form>')
    return page("Unsubscribe", form)


@blp.route("/u/<token>", methods=["POST"])
@blp.doc(responses=answers(200, "The page saying it is done.", "text/html"))
def unsubscribe(token: str) -> Response:
    """RFC 8058 one-click unsubscribe (`List-Unsubscribe=One-Click`), or the page's form; idempotent."""
    tracking.unsubscribe(token, request.remote_addr, request.user_agent.string)
    return page("You are unsubscribed", "<p>You will not receive these messages any more.</p>")
