"""Verified senders: the addresses and domains the merchant's email may come from."""
from __future__ import annotations

import uuid

from flask import Response, current_app

from app.api.blueprint import ApiBlueprint, SelectPage
from app.extensions import limiter
from app.schemas.senders import SenderCreateSchema, SenderSchema
from app.security.principal import current_user_id
from app.services import senders

blp = ApiBlueprint("senders", __name__, write_scope="settings:write", url_prefix="/api/v1/senders",
                   description="Addresses and domains campaigns may send email from, once verified")


def _per_merchant() -> str:
    return f"senders:{current_user_id()}"


def _sender_limit() -> str:
    return current_app.config["SENDER_RATE_LIMIT_ACCOUNT"]


def _accepted(response: Response) -> bool:
    # Invalid input and refusals cost nothing: only a sender made or a link mailed counts.
    return response.status_code in (201, 202)


# One allowance per merchant for both: each mails an address or makes a key.
sender_requests = limiter.shared_limit(_sender_limit, scope="senders", key_func=_per_merchant, deduct_when=_accepted)


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.response(200, SenderSchema(many=True))
@blp.paginate(SelectPage)
def list_senders():
    """The merchant's senders, newest first."""
    return senders.senders_query(current_user_id())


@blp.route("", methods=["POST"])
@blp.authenticated
@sender_requests
@blp.arguments(SenderCreateSchema)
@blp.response(201, SenderSchema)
def add_sender(data):
    """An address (`email`): a confirmation link is mailed to it, valid 48 hours; opening it and
    pressing the page's button verifies the address. A domain (`domain`): the answer's `dnsRecords`
    are the TXT records to publish (SPF include, DKIM with a key Herald made for the domain, DMARC);
    then `POST /{id}/check`. Placeholders such as example.com are refused (422). Each merchant may
    add senders and ask for links SENDER_RATE_LIMIT_ACCOUNT times (429 past it)."""
    if "email" in data:
        return senders.add_address(current_user_id(), data["email"])
    return senders.add_domain(current_user_id(), data["domain"])


@blp.route("/<uuid:sender_id>", methods=["GET"])
@blp.authenticated
@blp.response(200, SenderSchema)
def get_sender(sender_id: uuid.UUID):
    """One sender; a domain's with its records and the last check's findings."""
    return senders.get_sender(current_user_id(), sender_id)


@blp.route("/<uuid:sender_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
@blp.alt_response(409, description="A scheduled, running or paused campaign sends from it.")
def delete_sender(sender_id: uuid.UUID):
    """Remove the sender (a domain's DKIM key goes with it)."""
    senders.delete_sender(current_user_id(), sender_id)


@blp.route("/<uuid:sender_id>/check", methods=["POST"])
@blp.authenticated
@blp.response(200, SenderSchema)
@blp.alt_response(503, description="The DNS resolver did not answer; try again (Retry-After).")
def check_sender(sender_id: uuid.UUID):
    """Look the domain's records up in DNS: `status` becomes `verified` when all are right, else
    `pending`, and each of `dnsRecords` says `ok`, `missing` or `wrong` with the problem."""
    return senders.check_domain(current_user_id(), sender_id)


@blp.route("/<uuid:sender_id>/resend", methods=["POST"])
@blp.authenticated
@sender_requests
@blp.response(202, SenderSchema)
def resend_confirmation(sender_id: uuid.UUID):
    """Mail a pending address a new link (earlier ones stop working); one a minute."""
    return senders.resend_confirmation(current_user_id(), sender_id)
