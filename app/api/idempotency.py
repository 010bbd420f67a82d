"""`Idempotency-Key` on the API's POSTs: the request side of app.services.idempotency.

An authenticated POST carrying the header claims the key for its merchant before the view runs
(app.api.blueprint.ApiBlueprint.authenticated); the answer is recorded once the response is final,
error handlers included (`record_response`, an after-request hook). Unauthenticated POSTs (register,
login, refresh, verify-email) ignore the header: they have no merchant to scope a key to.
"""
from __future__ import annotations

import hashlib
import logging
import re
import uuid

from flask import Response, g, request

from app.errors import HeraldError
from app.extensions import db
from app.services import idempotency

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as Stripe and the IETF draft use
# Headers an answer is replayed with; the rest (request id, rate limits) describe the retry itself.
REPLAYED_HEADERS = ("Content-Type", "Location", "ETag", "Link")


class InvalidIdempotencyKey(HeraldError):
    status, code = 400, "invalid_idempotency_key"


def begin(user_id: uuid.UUID) -> Response | None:
    """Claim the request's key, if it has one: None to go on, or the first request's answer."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _VALID_KEY.fullmatch(key):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to 255 visible ASCII characters.")
    outcome = idempotency.claim(user_id, key, _fingerprint())
    if isinstance(outcome, idempotency.Claim):
        g.idempotency_claim = outcome
        return None
    response = Response(outcome.body, status=outcome.status, headers=outcome.headers)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def record_response(response: Response) -> Response:
    """Keep the answer for retries, or free the key when a retry may do better (a 5xx, a 429)."""
    claim = g.pop("idempotency_claim", None)
    if claim is None:
        return response
    try:
        if not db.session.is_active:  # the view's transaction failed; it is rolled back at teardown anyway
            db.session.rollback()
        if response.status_code < 500 and response.status_code != 429 and not response.is_streamed:
            headers = [(name, response.headers[name]) for name in REPLAYED_HEADERS if name in response.headers]
            idempotency.record(claim, idempotency.StoredResponse(response.status_code, headers, response.get_data()))
        else:
            idempotency.release(claim)
    except Exception:
        # The answer stands; the key stays claimed until its lease runs out (app.services.idempotency).
        log.exception("could not record the answer to an idempotent request")
    return response


def _fingerprint() -> bytes:
    """What makes two requests "the same": method, path, query, content type and body, byte for byte."""
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode("utf-8", "surrogatepass"), request.query_string,
                 (request.content_type or "").encode("utf-8", "surrogatepass"), request.get_data(cache=True)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()
