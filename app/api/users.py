"""The signed-in user's own account."""
from __future__ import annotations

from app.api.blueprint import ApiBlueprint
from app.schemas.users import AccountDeletionSchema, PasswordChangeSchema, UserSchema, UserUpdateSchema
from app.security.api_keys import LOGIN_ONLY
from app.security.principal import current_session_id, current_user_id
from app.services import account_deletion, accounts

blp = ApiBlueprint("users", __name__, write_scope="settings:write", url_prefix="/api/v1/users",
                   description="The signed-in user")


@blp.route("/me", methods=["GET"])
@blp.authenticated
@blp.response(200, UserSchema)
def get_me():
    return accounts.get_user(current_user_id())


@blp.route("/me", methods=["PATCH"])
@blp.authenticated
@blp.arguments(UserUpdateSchema)
@blp.response(200, UserSchema)
def update_me(changes):
    return accounts.update_profile(current_user_id(), changes)


@blp.route("/me/password", methods=["POST"])
@blp.authenticated(scope=LOGIN_ONLY)
@blp.arguments(PasswordChangeSchema)
@blp.response(204)
def change_password(data):
    """Change the password; every other session is signed out."""
    accounts.change_password(current_user_id(), current_session_id(), data["current_password"], data["new_password"])


@blp.route("/me", methods=["DELETE"])
@blp.authenticated(scope=LOGIN_ONLY)
@blp.arguments(AccountDeletionSchema)
@blp.response(202)
def delete_me(data):
    """Delete the account and all its data (password confirmed). At once: signed out everywhere,
    unable to sign in, campaigns stopped; a worker then deletes the data in batches."""
    account_deletion.request_deletion(current_user_id(), data["password"])
