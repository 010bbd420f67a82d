"""Conversations with the assistant and their messages."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.conversations import (
    ConversationCreateSchema,
    ConversationQuerySchema,
    ConversationSchema,
    ConversationUpdateSchema,
    MessageCreateSchema,
    MessageSchema,
)
from app.security.principal import current_user_id
from app.services import conversations

blp = ApiBlueprint("conversations", __name__, write_scope="conversations:write",
                   url_prefix="/api/v1/conversations",
                   description="Chats with the marketing assistant")

CONVERSATION = "/<uuid:conversation_id>"


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(ConversationQuerySchema, location="query")
@blp.response(200, ConversationSchema(many=True))
@blp.paginate(SelectPage)
def list_conversations(filters):
    """The merchant's conversations, newest first; deleted ones only with `status=deleted`."""
    return conversations.conversations_query(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(ConversationCreateSchema)
@blp.response(201, ConversationSchema)
def create_conversation(data):
    return conversations.create_conversation(current_user_id(), **data)


@blp.route(CONVERSATION, methods=["GET"])
@blp.authenticated
@blp.response(200, ConversationSchema)
def get_conversation(conversation_id: uuid.UUID):
    return conversations.owned_conversation(current_user_id(), conversation_id)


@blp.route(CONVERSATION, methods=["PATCH"])
@blp.authenticated
@blp.arguments(ConversationUpdateSchema)
@blp.response(200, ConversationSchema)
def update_conversation(changes, conversation_id: uuid.UUID):
    """Rename, archive or reactivate; a deleted conversation answers 409."""
    return conversations.update_conversation(current_user_id(), conversation_id, changes)


@blp.route(CONVERSATION, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_conversation(conversation_id: uuid.UUID):
    """Mark the conversation deleted; its messages and the campaigns it created stay."""
    conversations.delete_conversation(current_user_id(), conversation_id)


@blp.route(CONVERSATION + "/messages", methods=["GET"])
@blp.authenticated
@blp.response(200, MessageSchema(many=True))
@blp.paginate(SelectPage)
def list_messages(conversation_id: uuid.UUID):
    """The conversation's messages, oldest first."""
    return conversations.messages_query(current_user_id(), conversation_id)


@blp.route(CONVERSATION + "/messages", methods=["POST"])
@blp.authenticated
@blp.arguments(MessageCreateSchema)
@blp.response(202, MessageSchema)
def post_message(data, conversation_id: uuid.UUID):
    """Store the merchant's message and answer at once; the assistant's reply follows as a new message
    (poll the messages). A deleted conversation answers 409."""
    return conversations.post_message(current_user_id(), conversation_id, data["content"])
