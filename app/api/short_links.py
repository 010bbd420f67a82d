"""Short tracked links in SMS and WhatsApp messages: `/l/<code>` (public, no auth: the code is the
credential). A forged or unknown code answers 404 and redirects nowhere."""
from __future__ import annotations

from flask import redirect, request
from werkzeug.wrappers import Response as BaseResponse

from app.api.blueprint import HeraldBlueprint
from app.api.html_pages import NO_CACHE, invalid_link
from app.api.openapi import answers
from app.errors import NotFound
from app.extensions import limiter
from app.services import tracking

blp = HeraldBlueprint("short_links", __name__, url_prefix="/l", description="Short links in text messages (public)")
# Followed by every recipient (and their carriers' link previews): API throttles do not apply.
limiter.exempt(blp)


blp.errorhandler(NotFound)(invalid_link)


@blp.route("/<code>", methods=["GET"])
@blp.doc(responses=answers(302, "To the link's URL (`Location`)."))
def follow(code: str) -> BaseResponse:
    """302 to the URL stored for the message's channel; the delivery's first click is counted (a
    HEAD request, a link preview's check, counts nothing)."""
    response = redirect(tracking.record_short_click(code, count=request.method != "HEAD"), code=302)
    response.headers.update({**NO_CACHE, "Referrer-Policy": "no-referrer"})
    return response
