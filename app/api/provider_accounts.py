"""Provider accounts: the merchant's own Twilio, WhatsApp Cloud API and Web Push (VAPID) settings."""
from __future__ import annotations

from app.api.blueprint import ApiBlueprint, SelectPage
from app.channels.catalogue import ACCOUNT_CHANNELS
from app.schemas.provider_accounts import (
    ProviderAccountPutSchema,
    ProviderAccountSchema,
)
from app.security.principal import current_user_id
from app.services import provider_accounts

blp = ApiBlueprint("provider_accounts", __name__, write_scope="settings:write", url_prefix="/api/v1/provider-accounts",
                   description="The merchant's SMS, WhatsApp and web push provider accounts")

# Any other channel type is not a route at all: 404, like a missing account.
CHANNEL_PATH = f"/<any({', '.join(ACCOUNT_CHANNELS)}):channel_type>"


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.response(200, ProviderAccountSchema(many=True))
@blp.paginate(SelectPage)
def list_accounts():
    """The merchant's provider accounts, secrets redacted."""
    return provider_accounts.list_accounts(current_user_id())


@blp.route(CHANNEL_PATH, methods=["GET"])
@blp.authenticated
@blp.response(200, ProviderAccountSchema)
def get_account(channel_type: str):
    return provider_accounts.get_account(current_user_id(), channel_type)


@blp.route(CHANNEL_PATH, methods=["PUT"])
@blp.authenticated
@blp.arguments(ProviderAccountPutSchema)
@blp.response(200, ProviderAccountSchema)
def put_account(data, channel_type: str):
    """Create the account or replace its config; secrets left out or sent as "********" are kept."""
    return provider_accounts.put_account(current_user_id(), channel_type, data["config"])


@blp.route(CHANNEL_PATH, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_account(channel_type: str):
    provider_accounts.delete_account(current_user_id(), channel_type)
