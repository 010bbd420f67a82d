"""API keys: a merchant's scoped credentials for integrations. Managed with a login token only."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.api_keys import ApiKeyCreateSchema, ApiKeySchema, CreatedApiKeySchema
from app.security.api_keys import LOGIN_ONLY
from app.security.principal import current_user_id
from app.services import api_keys

# A key cannot see, mint or revoke keys: that takes the merchant's login.
blp = ApiBlueprint("api_keys", __name__, write_scope=LOGIN_ONLY, url_prefix="/api/v1/api-keys",
                   description="Scoped API keys for integrations")


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.response(200, ApiKeySchema(many=True))
@blp.paginate(SelectPage)
def list_keys():
    """The merchant's active keys, newest first (never the keys themselves)."""
    return api_keys.active_keys(current_user_id())


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(ApiKeyCreateSchema)
@blp.response(201, CreatedApiKeySchema)
def create_key(data):
    """Create a key holding the given scopes. The key is in this answer only; Herald keeps its hash."""
    return api_keys.create_key(current_user_id(), data["name"], data["scopes"])


@blp.route("/<uuid:api_key_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
@blp.alt_response(404, description="No such active key of this merchant.")
def revoke_key(api_key_id: uuid.UUID):
    """Revoke the key: its next request is refused (401)."""
    api_keys.revoke_key(current_user_id(), api_key_id)
