"""Twilio's message status callbacks (public: Twilio's request signature is the credential).

No auth, cookies or CSRF token: Twilio calls the StatusCallback URL each message was sent with,
signing it with the merchant's auth token (`X-Twilio-Signature`). Unsigned, mis-signed or naming an
unknown account: 403 and nothing changes.
"""
from __future__ import annotations

from flask import Response, request

from app.api.blueprint import HeraldBlueprint
from app.api.openapi import answers
from app.extensions import limiter
from app.services import receipts

blp = HeraldBlueprint("twilio_hooks", __name__, url_prefix="/hooks/twilio",
                description="Twilio message status callbacks (public, signed)")
# Twilio calls back once per status change of every message a campaign sends: API throttles don't apply.
limiter.exempt(blp)


@blp.route("/status", methods=["POST"])
@blp.doc(responses=answers(200, "An empty TwiML document.", "application/xml"))
def message_status() -> Response:
    """A message status callback (form-encoded, `X-Twilio-Signature`): `delivered` counts the
    delivery once; `undelivered` and `failed` record the error; other statuses change nothing."""
    receipts.twilio_status_callback(list(request.form.items(multi=True)), request.headers.get("X-Twilio-Signature"))
    # An empty TwiML document: what Twilio expects from a webhook that has nothing to say.
    return Response("<Response/>", mimetype="application/xml")
