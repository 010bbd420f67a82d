"""Schemas for conversations and their messages."""
from __future__ import annotations

from marshmallow import fields, validate

from app.models.conversations import CONVERSATION_STATUSES
from app.schemas.base import NOT_BLANK, CamelSchema, UtcDateTime, name_field, no_nul

TITLE_MAX = 200
CONTENT_MAX = 10_000
# `deleted` is reached through DELETE only.
SETTABLE_STATUSES = ("active", "archived")


class ConversationSchema(CamelSchema):
    id = fields.UUID()
    title = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "active, archived or deleted."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class ConversationCreateSchema(CamelSchema):
    title = name_field(TITLE_MAX, allow_none=True)


class ConversationUpdateSchema(CamelSchema):
    title = name_field(TITLE_MAX, allow_none=True)
    status = fields.String(validate=validate.OneOf(SETTABLE_STATUSES),
                           metadata={"description": "active or archived; DELETE the conversation to delete it."})


class ConversationQuerySchema(CamelSchema):
    status = fields.String(validate=validate.OneOf(CONVERSATION_STATUSES),
                           metadata={"description": "Deleted conversations are listed only with status=deleted."})


class MessageSchema(CamelSchema):
    id = fields.UUID()
    conversation_id = fields.UUID()
    role = fields.String(metadata={"description": "user or assistant."})
    content = fields.String()
    meta = fields.Dict(data_key="metadata", allow_none=True, metadata={
        "description": "Assistant messages: replyTo (the user message answered), model, toolCalls "
                       "[{name, arguments, result}], usage (token counts where known), or error when it "
                       "could not answer."
    })
    created_at = UtcDateTime()


class MessageCreateSchema(CamelSchema):
    content = fields.String(required=True, validate=[
        validate.Length(min=1, max=CONTENT_MAX), NOT_BLANK, no_nul,
    ])
