"""Email providers' webhooks: Amazon SES notifications through Amazon SNS, and SendGrid's signed
Event Webhook. Bounces, complaints and deliveries they report are applied once (app.services.bounces).

Public: SNS proves itself with a signature checked against its signing certificate (and the topic
must be one of SES_SNS_TOPIC_ARNS); SendGrid with an ECDSA signature checked against
SENDGRID_WEBHOOK_PUBLIC_KEY. Unsigned: 401; forged, or not configured: 403; either way nothing changes.
"""
from __future__ import annotations

from flask import Response, request

from app.api.blueprint import HeraldBlueprint
from app.api.openapi import answers
from app.channels import sendgrid
from app.extensions import limiter
from app.services import bounces

blp = HeraldBlueprint("email_hooks", __name__, url_prefix="/hooks",
                      description="Amazon SES (through SNS) and SendGrid event webhooks (public, signed)")
# Providers report on every message of every merchant from a few addresses: throttling would lose reports.
limiter.exempt(blp)


@blp.route("/ses", methods=["POST"])
@blp.doc(responses=answers(200, "Applied (or a subscription confirmed)."))
def ses_notification() -> Response:
    """An Amazon SNS message (JSON, sent as text/plain): a SubscriptionConfirmation is confirmed by
    visiting its SubscribeURL; a Notification's `Bounce`, `Complaint`, `Delivery`, `DeliveryDelay` or
    `Reject` is applied to the delivery it names."""
    bounces.ses_webhook(request.get_data(cache=False))  # the signature covers the fields as sent
    return Response(status=200)


@blp.route("/sendgrid", methods=["POST"])
@blp.doc(responses=answers(204, "Applied."))
def sendgrid_events() -> Response:
    """A batch of SendGrid events (`bounce`, `blocked`, `deferred`, `dropped`, `spamreport`, `delivered`;
    others are ignored)."""
    raw = request.get_data(cache=False)  # the signature covers these exact bytes
    bounces.sendgrid_webhook(raw, request.headers.get(sendgrid.SIGNATURE_HEADER),
                             request.headers.get(sendgrid.TIMESTAMP_HEADER))
    return Response(status=204)
