"""What the OpenAPI document says beyond each view's own decorators, declared once: the statuses a
route answers because of what kind of route it is (its path ids, its body, its credential, its
throttle, the database behind it), and Swagger UI served from the installed package (no CDN).

A status a view already documents keeps its own description.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, send_from_directory
from marshmallow import fields
from swagger_ui_bundle import swagger_ui_path
from werkzeug.routing import Rule

JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
HTML_PAGE = {"text/html": {"schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
DOCS_ASSETS = "/docs/assets"

# Routes that never touch the database (so never answer 503 for it).
NO_DATABASE = frozenset({"health.healthz"})

# Statuses some routes answer and others do not, by endpoint ("blueprint.view") or by blueprint.
# tests/test_openapi.py checks that every name here is a route of the app.
ROUTE_STATUSES: Mapping[str, Mapping[int, str]] = {
    "auth.register": {
        409: "An account with this address exists already.",
        429: "Too many registrations from this client lately (REGISTER_RATE_LIMIT_IP); see `Retry-After`.",
    },
    "auth.login": {
        401: "Wrong email or password.",
        429: "Too many failed logins for this account or from this client lately; see `Retry-After`.",
    },
    "auth.refresh": {401: "The refresh token is unknown, expired, revoked or already used."},
    "auth.verify_email": {400: "The token is invalid, expired or already used."},
    "auth.resend_verification": {429: "A link was sent less than a minute ago; see `Retry-After`."},
    "contacts.import_contacts": {415: "Neither JSON (application/json) nor CSV (text/csv)."},
    "ingest": {
        401: "A missing or wrong `X-Ingest-Key` (or Shopify signature).",
        403: "The data source is inactive.",
        429: "Too many failed authentications from this client lately (INGEST_RATE_LIMIT_IP); see `Retry-After`.",
    },
    "email_hooks": {
        401: "The request is not signed.",
        403: "The signature does not verify, or the provider is not configured.",
    },
    "twilio_hooks": {403: "Not signed by the Twilio account it names."},
    "account_pages": {400: "The link is invalid, expired or already used."},
    "sender_pages": {404: "The link is incomplete, unknown or replaced by a newer one.", 410: "The link expired."},
    "whatsapp_hooks": {403: "The verify token or the `X-Hub-Signature-256` signature does not match."},
}
# Routes people open from a message: these errors are pages, not JSON.
HTML_ERRORS: Mapping[str, frozenset[int]] = {
    "tracking": frozenset({404}), "short_links": frozenset({404}), "account_pages": frozenset({400}),
    "sender_pages": frozenset({404, 410}),
}


def route_statuses(rule: Rule, method: str, operation: Mapping[str, Any]) -> dict[int, str]:
    """Every error status the route can answer, and why, apart from 500 (`default`)."""
    endpoint = rule.endpoint or ""
    statuses: dict[int, str] = {}
    if rule.arguments:
        statuses[404] = "Nothing here: no such id, not one of this merchant's, or a malformed one."
    if method in ("post", "put", "patch"):
        statuses[400] = "The body is not valid JSON, or a header is malformed."
        statuses[413] = "The body is larger than this route takes."
    if operation.get("security") and method != "get":
        statuses[409] = "The resource's current state does not allow this, or it would duplicate another."
    for name in (endpoint.partition(".")[0], endpoint):
        statuses.update(ROUTE_STATUSES.get(name, {}))
    if endpoint not in NO_DATABASE:
        statuses[503] = ("Not now, try again after `Retry-After` seconds: the database is unreachable (or, for a "
                         "provider's callback, the message it reports on is still being recorded).")
    return statuses


def error_response(status: int, description: str, *, html: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": HTML_PAGE if html else JSON_ERROR}
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


# What a dict's key field may say about the keys (JSON Schema's propertyNames).
_KEY_PROPERTIES = ("type", "enum", "minLength", "maxLength", "pattern")


def dict_key_names(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """An apispec attribute function: a Dict's key rules (a channel name, a length) as
    `propertyNames`, which apispec leaves out."""
    key_field = getattr(field, "key_field", None)
    if not isinstance(field, fields.Dict) or key_field is None:
        return {}
    names = {name: value for name, value in self.field2property(key_field).items() if name in _KEY_PROPERTIES}
    return {"propertyNames": names} if set(names) - {"type"} else {}


class HeraldSpecPlugin(BasePlugin):
    """Adds `route_statuses` to each operation as flask-smorest documents it, and `dict_key_names`
    to the marshmallow converter."""

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        for plugin in spec.plugins:
            if isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None:
                plugin.converter.add_attribute_function(dict_key_names)

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        pages = HTML_ERRORS.get((rule.endpoint or "").partition(".")[0], frozenset())
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, description in route_statuses(rule, method, operation).items():
                own = responses.get(status, responses.get(str(status)))
                if own is None:
                    responses[str(status)] = error_response(status, description, html=status in pages)
                elif status in (429, 503):  # the view's own description and body win; the header is the same
                    own.setdefault("headers", RETRY_AFTER)


def register_docs_assets(app: Flask) -> None:
    """Swagger UI's scripts and styles from the swagger-ui-bundle package, at OPENAPI_SWAGGER_UI_URL."""

    def docs_asset(filename: str):
        return send_from_directory(str(swagger_ui_path), filename, max_age=86400)

    app.add_url_rule(f"{DOCS_ASSETS}/<path:filename>", "docs_asset", docs_asset)


def answers(status: int, description: str, media_type: str | None = None) -> dict[str, Any]:
    """`@blp.doc(responses=answers(...))`: a route's success that is not a JSON body (a page, an
    image, a redirect, an empty answer to a provider)."""
    response: dict[str, Any] = {"description": description}
    if media_type:
        response["content"] = {media_type: {"schema": {"type": "string", "format": "binary"}
                                            if media_type.startswith("image/") else {"type": "string"}}}
    return {str(status): response}
