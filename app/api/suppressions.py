"""The merchant's suppression list: addresses never sent to, whoever holds them."""
from __future__ import annotations

import uuid

from flask import Response, request, stream_with_context

from app.api.blueprint import ApiBlueprint, SelectPage
from app.errors import ValidationFailed
from app.schemas.suppressions import (
    SuppressionCreateSchema,
    SuppressionImportResultSchema,
    SuppressionQuerySchema,
    SuppressionSchema,
)
from app.security.principal import current_user_id
from app.services import suppressions

blp = ApiBlueprint("suppressions", __name__, write_scope="contacts:write", url_prefix="/api/v1/suppressions",
                   description="Addresses the merchant must not send to (they outlive the contact)")

CSV_BODY = {"required": True, "content": {"text/csv": {"schema": {"type": "string", "description": (
    "Header row; an email and/or a phone column, optionally a reason column (bounced, complained, "
    "unsubscribed, manual; default manual).")}}}}


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(SuppressionQuerySchema, location="query")
@blp.response(200, SuppressionSchema(many=True))
@blp.paginate(SelectPage)
def list_suppressions(filters):
    """The list, newest first."""
    return suppressions.suppressions_query(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(SuppressionCreateSchema)
@blp.response(201, SuppressionSchema)
def add_suppression(data):
    """Suppress an address (an address already listed keeps its first reason). Whoever holds it has
    the channel's consent held off; their messages are skipped with reason `suppressed`."""
    return suppressions.add(current_user_id(), data["kind"], data["address"], data["reason"])


@blp.route("/<uuid:suppression_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def remove_suppression(suppression_id: uuid.UUID):
    """Only on the person's own new opt-in: their consent stays off until they subscribe again."""
    suppressions.remove(current_user_id(), suppression_id)


@blp.route("/import", methods=["POST"])
@blp.authenticated
@blp.doc(requestBody=CSV_BODY)
@blp.response(200, SuppressionImportResultSchema)
def import_suppressions():
    """A CSV of addresses, all or nothing (a 422 names the bad rows)."""
    if request.mimetype != "text/csv":
        raise ValidationFailed("Send a CSV file (text/csv).")
    try:
        text = request.get_data().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("The CSV file is not valid UTF-8.") from None
    return suppressions.import_csv(current_user_id(), text)


@blp.route("/export", methods=["GET"])
@blp.authenticated
@blp.doc(responses={"200": {"description": "The whole list as CSV.", "content": {"text/csv": {}}}})
def export_suppressions():
    """The whole list as CSV: kind, address (empty once erased), address_sha256, reason, created_at."""
    body = stream_with_context(suppressions.export_csv(current_user_id()))
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'})
