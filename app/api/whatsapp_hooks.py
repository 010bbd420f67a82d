"""Meta's WhatsApp webhook: the subscription handshake and signed message-status callbacks.

Public: Meta authenticates itself with the platform app's verify token (handshake) and with
`X-Hub-Signature-256` over the raw body (callbacks). Anything unproven answers 403 and changes nothing.
"""
from __future__ import annotations

from flask import Response, current_app, request

from app.api.blueprint import HeraldBlueprint
from app.api.openapi import answers
from app.channels import whatsapp
from app.config import Settings
from app.errors import Forbidden
from app.extensions import limiter
from app.services import receipts

blp = HeraldBlueprint("whatsapp_hooks", __name__, url_prefix="/hooks/whatsapp",
                description="WhatsApp Cloud API webhook (public, signed by Meta)")
# Meta delivers every status of every merchant's messages from a few addresses: throttling them
# would lose receipts (Meta gives up on a webhook after its retries run out).
limiter.exempt(blp)


def _settings() -> Settings:
    return current_app.config["HERALD_SETTINGS"]


@blp.route("", methods=["GET"])
@blp.doc(responses=answers(200, "`hub.challenge`, echoed.", "text/plain"))
def verify_subscription() -> Response:
    """The handshake: `hub.challenge` echoed as text when `hub.verify_token` is the platform's."""
    args = request.args
    if not whatsapp.subscription_valid(args.get("hub.mode"), args.get("hub.verify_token"),
                                       _settings().whatsapp_verify_token):
        raise Forbidden("The verify token does not match.")
    return Response(args.get("hub.challenge", ""), mimetype="text/plain",
                    headers={"X-Content-Type-Options": "nosniff"})


@blp.route("", methods=["POST"])
@blp.doc(responses=answers(200, "Applied."))
def message_statuses() -> Response:
    """Message statuses (`sent`, `delivered`, `read`, `failed`); a repeated callback counts once."""
    raw = request.get_data(cache=False)  # the signature covers these exact bytes
    receipts.whatsapp_status_webhook(raw, request.headers.get("X-Hub-Signature-256"),
                                     _settings().whatsapp_app_secret)
    return Response(status=200)
