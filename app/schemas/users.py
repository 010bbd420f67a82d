"""Schemas for accounts, sessions and tokens."""
from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from marshmallow import ValidationError, fields, validate

from app.schemas.base import CamelSchema, UtcDateTime
from app.security.principal import current_session_id

EMAIL_MAX = 254
NAME_MAX = 100
TOKEN_MAX = 512
# Long enough for every allowed password; the policy itself lives in app.security.passwords.
PASSWORD_FIELD_MAX = 1024


def _valid_email(value: str) -> None:
    try:
        validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError(f"Not a valid email address: {exc}") from exc


def _email_field() -> fields.String:
    return fields.String(required=True, validate=[validate.Length(max=EMAIL_MAX), _valid_email], metadata={"format": "email"})


def _password_field(**kwargs) -> fields.String:
    return fields.String(load_only=True, validate=validate.Length(min=1, max=PASSWORD_FIELD_MAX), **kwargs)


def _name_field() -> fields.String:
    return fields.String(allow_none=True, validate=validate.Length(max=NAME_MAX))


class UserSchema(CamelSchema):
    id = fields.UUID(dump_only=True)
    email = fields.String(dump_only=True)
    first_name = fields.String(dump_only=True, allow_none=True)
    last_name = fields.String(dump_only=True, allow_none=True)
    company_name = fields.String(dump_only=True, allow_none=True)
    is_verified = fields.Boolean(dump_only=True)
    last_login_at = UtcDateTime(dump_only=True, allow_none=True, metadata={"description": "Null until the first login."})
    created_at = UtcDateTime(dump_only=True)
    updated_at = UtcDateTime(dump_only=True)


class UserUpdateSchema(CamelSchema):
    first_name = _name_field()
    last_name = _name_field()
    company_name = _name_field()


class RegisterSchema(UserUpdateSchema):
    email = _email_field()
    password = _password_field(required=True)


class LoginSchema(CamelSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=EMAIL_MAX))
    password = _password_field(required=True)


class RefreshSchema(CamelSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=TOKEN_MAX))


class VerifyEmailSchema(CamelSchema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=TOKEN_MAX))


class PasswordChangeSchema(CamelSchema):
    current_password = _password_field(required=True)
    new_password = _password_field(required=True)


class TokenPairSchema(CamelSchema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer(metadata={"description": "Seconds until the access token expires."})
    user = fields.Nested(UserSchema)


class SessionSchema(CamelSchema):
    id = fields.UUID()
    ip_address = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    created_at = UtcDateTime()
    last_used_at = UtcDateTime(attribute="updated_at", metadata={"description": "Last login or refresh."})
    expires_at = UtcDateTime()
    # Dumped while answering the request, so the request's own token says which session is current.
    current = fields.Function(
        lambda session: session.id == current_session_id(),
        metadata={"description": "The session of the token making this request."},
    )


class AccountDeletionSchema(CamelSchema):
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=1024),
                             metadata={"description": "The account's current password."})
