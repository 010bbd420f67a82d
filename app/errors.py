"""Domain errors and the one place that turns any error into the JSON error body.

Body: {"status": 404, "code": "not_found", "message": "...", "errors": {...}} — `errors` only where
input was invalid, keyed by field.
"""
from __future__ import annotations

import logging
from typing import Any

import psycopg2
import sqlalchemy as sa
from flask import Flask, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

# Seconds a client is told to wait when the database (or, for /readyz, Redis) can't be reached: a
# restart or failover takes seconds.
UNAVAILABLE_RETRY_AFTER = 5


class HeraldError(Exception):
    """An expected failure a service reports; the API answers it with `status` and `code`."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class Unauthorized(HeraldError):
    status, code = 401, "unauthorized"


class Forbidden(HeraldError):
    status, code = 403, "forbidden"


class NotFound(HeraldError):
    status, code = 404, "not_found"


class Conflict(HeraldError):
    status, code = 409, "conflict"


class ValidationFailed(HeraldError):
    status, code = 422, "validation_failed"


class TooManyRequests(HeraldError):
    status, code = 429, "too_many_requests"


class TryLater(HeraldError):
    """Nothing was wrong with the request, but it cannot be handled now: the caller retries."""

    status, code = 503, "service_unavailable"


MAX_REPORTED_ERRORS = 20


def error_body(status: int, code: str, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if errors:
        body["errors"], omitted = _first_errors(errors, MAX_REPORTED_ERRORS)
        if omitted:
            body["omittedErrors"] = omitted  # a bounded answer, whatever the size of the input
    return body


def _first_errors(errors: Any, room: int) -> tuple[Any, int]:
    """The first `room` error messages of a nested report, in its shape, and how many were left out."""
    if isinstance(errors, dict):
        kept: dict[Any, Any] = {}
        omitted = 0
        for key, inner in errors.items():
            if room <= 0:
                omitted += _count(inner)
                continue
            kept[key], left_out = _first_errors(inner, room)
            room -= _count(kept[key])
            omitted += left_out
        return kept, omitted
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        return errors[:max(room, 1)], max(len(errors) - max(room, 1), 0)
    return errors, 0


def _count(errors: Any) -> int:
    if isinstance(errors, dict):
        return sum(_count(inner) for inner in errors.values())
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        return len(errors)
    return 1


def _field_errors(exc: HTTPException) -> Any:
    """webargs puts field errors under their location ({"json": {...}}); clients want the fields."""
    messages = (getattr(exc, "data", None) or {}).get("messages")
    if isinstance(messages, dict) and len(messages) == 1:
        (only,) = messages.values()
        return only
    return messages


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def database_unreachable(exc: BaseException) -> bool:
    """The database is down or the connection broke (refused, reset, shut down by an operator),
    as opposed to a statement that failed on its own (a constraint, a bug)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError)
    return isinstance(exc, psycopg2.OperationalError)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HeraldError)
    def handle_domain_error(exc: HeraldError):
        return jsonify(error_body(exc.status, exc.code, exc.message, exc.errors)), exc.status, exc.headers

    @app.errorhandler(ValidationError)
    def handle_schema_error(exc: ValidationError):
        body = error_body(422, "validation_failed", "The request body or parameters are invalid.", exc.messages)
        return jsonify(body), 422

    # Replaces flask-smorest's own handler so every error has the same shape.
    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        code = _http_code(exc)
        if status == 422:  # one code for invalid input, whether a schema or a service found it
            message, code = "The request body or parameters are invalid.", ValidationFailed.code
        headers = dict((getattr(exc, "data", None) or {}).get("headers") or {})
        if exc.response is not None:
            headers.update({k: v for k, v in exc.response.headers.items() if k.lower() == "retry-after"})
        allowed = getattr(exc, "valid_methods", None)  # set on MethodNotAllowed only
        if status == 405 and allowed:
            headers["Allow"] = ", ".join(allowed)
        return jsonify(error_body(status, code, message, _field_errors(exc))), status, headers

    @app.errorhandler(sa.exc.DBAPIError)
    @app.errorhandler(psycopg2.Error)
    def handle_database_error(exc: Exception):
        if not database_unreachable(exc):
            return handle_unexpected(exc)
        # SQLAlchemy has already discarded the broken connections: once the database is back, the
        # next request connects afresh.
        log.warning("database unreachable: %s: %s", type(exc).__name__, getattr(exc, "orig", None) or exc)
        body = error_body(503, "service_unavailable", "The database is unreachable; try again shortly.")
        return jsonify(body), 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # The trace goes to the log (with the request id), never to the client.
        log.exception("unhandled error")
        generic = InternalServerError()
        return jsonify(error_body(500, "internal_server_error", generic.description)), 500
