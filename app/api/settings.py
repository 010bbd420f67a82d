"""The merchant's sending settings."""
from __future__ import annotations

from app.api.blueprint import ApiBlueprint
from app.schemas.settings import SettingsSchema, SettingsUpdateSchema
from app.security.principal import current_user_id
from app.services import settings

blp = ApiBlueprint("settings", __name__, write_scope="settings:write", url_prefix="/api/v1/settings",
                   description="Timezone, quiet hours, frequency caps, UTM and attribution")


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.response(200, SettingsSchema)
def get_settings():
    """The settings in force (the defaults until changed)."""
    return settings.get_settings(current_user_id())


@blp.route("", methods=["PATCH"])
@blp.authenticated
@blp.arguments(SettingsUpdateSchema)
@blp.response(200, SettingsSchema)
def update_settings(changes):
    """Change some settings; invalid input is a 422 naming each bad field, and nothing changes."""
    return settings.update_settings(current_user_id(), changes)
