"""Outgoing webhook endpoints: where Herald posts the merchant's events, signed; their delivery log
and replays."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.webhooks import (
    CreatedWebhookEndpointSchema,
    WebhookDeliveryQuerySchema,
    WebhookDeliverySchema,
    WebhookEndpointCreateSchema,
    WebhookEndpointSchema,
    WebhookEndpointUpdateSchema,
)
from app.security.principal import current_user_id
from app.services import webhooks

blp = ApiBlueprint("webhooks", __name__, write_scope="webhooks:write", url_prefix="/api/v1/webhook-endpoints",
                   description="Endpoints that receive the merchant's events, signed (outgoing webhooks)")


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.response(200, WebhookEndpointSchema(many=True))
@blp.paginate(SelectPage)
def list_endpoints():
    """The merchant's endpoints, oldest first (never their secrets)."""
    return webhooks.endpoints_query(current_user_id())


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(WebhookEndpointCreateSchema)
@blp.response(201, CreatedWebhookEndpointSchema)
@blp.alt_response(409, description="The merchant has the most endpoints allowed.")
def create_endpoint(data):
    """Register an endpoint for the given event types. Its signing secret is in this answer only."""
    return webhooks.create_endpoint(current_user_id(), data["url"], data["event_types"], data.get("description"))


@blp.route("/<uuid:endpoint_id>", methods=["GET"])
@blp.authenticated
@blp.response(200, WebhookEndpointSchema)
@blp.alt_response(404, description="No such endpoint of this merchant.")
def get_endpoint(endpoint_id: uuid.UUID):
    return webhooks.get_endpoint(current_user_id(), endpoint_id)


@blp.route("/<uuid:endpoint_id>", methods=["PATCH"])
@blp.authenticated
@blp.arguments(WebhookEndpointUpdateSchema)
@blp.response(200, WebhookEndpointSchema)
@blp.alt_response(404, description="No such endpoint of this merchant.")
def update_endpoint(data, endpoint_id: uuid.UUID):
    """Change it; `enabled: true` enables a disabled endpoint again."""
    return webhooks.update_endpoint(current_user_id(), endpoint_id, data)


@blp.route("/<uuid:endpoint_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
@blp.alt_response(404, description="No such endpoint of this merchant.")
def delete_endpoint(endpoint_id: uuid.UUID):
    webhooks.delete_endpoint(current_user_id(), endpoint_id)


@blp.route("/<uuid:endpoint_id>/deliveries", methods=["GET"])
@blp.authenticated
@blp.arguments(WebhookDeliveryQuerySchema, location="query")
@blp.response(200, WebhookDeliverySchema(many=True))
@blp.alt_response(404, description="No such endpoint of this merchant.")
@blp.paginate(SelectPage)
def list_deliveries(filters, endpoint_id: uuid.UUID):
    """The delivery log, newest first: each event, its attempts and the last answer."""
    return webhooks.deliveries_query(current_user_id(), endpoint_id, filters.get("status"))


@blp.route("/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>/replay", methods=["POST"])
@blp.authenticated
@blp.response(202, WebhookDeliverySchema)
@blp.alt_response(404, description="No such endpoint or delivery of this merchant.")
@blp.alt_response(409, description="The endpoint is disabled.")
def replay_delivery(endpoint_id: uuid.UUID, delivery_id: uuid.UUID):
    """Send the delivery's event again (the same event id) as a new delivery."""
    return webhooks.replay(current_user_id(), endpoint_id, delivery_id)
