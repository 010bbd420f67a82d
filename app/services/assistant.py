"""The assistant's reply to a merchant's message: exactly one per user message, always one.

`reply` runs in one transaction from claim to answer: a transaction-scoped advisory lock on the user
message (a second worker running the same reply skips at once), a check that no assistant message
has `metadata.replyTo` = that message yet, the model/tool rounds, then the answer. Tools write in the
same transaction (`app.assistant.tools` never commits), so a draft campaign exists only if the reply
announcing it does. Any failure rolls all of that back and writes an apology instead, with the error
in `metadata.error`, so the chat never hangs. Nothing here schedules or launches a campaign, nor
activates a flow.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import orm

from app import task_names as tasks
from app.assistant.backend import (
    Backend,
    BackendError,
    Completion,
    ToolCall,
    backend_for,
)
from app.assistant.tools import TOOLS, run_tool
from app.extensions import db
from app.jobs import enqueue_after_commit
from app.models import Conversation, Message, utcnow

log = logging.getLogger(__name__)

MAX_ROUNDS = 5
# Stop starting new model rounds after this long; the task's soft time limit is the hard stop.
DEADLINE_SECONDS = 120
# About 6k tokens of history at ~4 characters a token; the newest messages are kept.
HISTORY_CHAR_BUDGET = 24_000
HISTORY_MAX_MESSAGES = 100
TOOL_RESULT_MAX_CHARS = 16_000
# Lost replies are looked for between these ages: younger ones may still be in a worker's hands,
# and an answer hours late would only confuse.
PENDING_AFTER = timedelta(minutes=1)
PENDING_UNTIL = timedelta(hours=1)
PENDING_BATCH = 100
# Tools that create something, at most once per user message: the id their result names it by.
ONE_PER_MESSAGE = {"create_draft_campaign": "campaignId", "draft_flow": "flowId"}
FAILURE_TEXT = "Sorry, I couldn't answer that just now. Please try again in a moment."

SYSTEM_PROMPT = """You are Herald's marketing assistant. Herald is a platform where a merchant connects \
customer data sources (Shopify, Meta Pixel, Google Tag Manager), keeps contacts with per-channel consent, \
and sends campaigns by email, SMS, web push and WhatsApp to audiences defined over contact activity and \
attributes. You are talking to one merchant about their own data.

Tools: data_summary (their sources, event counts by type, contacts and consent), preview_audience (how many \
contacts an audience definition matches, with a sample), create_draft_campaign (a DRAFT campaign with \
channels and one audience, linked to this conversation) and draft_flow (a DRAFT triggered flow: messages \
sent a delay after each contact's event, e.g. an abandoned-checkout reminder). Preview an audience before \
proposing a campaign for it. You never schedule, launch, pause or cancel anything, nor activate a flow: you \
propose a draft, with a suggested send time if one was asked for, and tell the merchant to review it and \
schedule or launch it (or activate the flow) themself. \
Templates use Jinja over `contact`, e.g. {{{{ contact.firstName }}}}. Be brief and concrete; report counts \
exactly as the tools return them. The current time is {now} UTC."""


@dataclass
class _Turn:
    """What the reply did so far: recorded in the answer's metadata."""

    model: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)

    def add(self, completion: Completion) -> None:
        self.model = completion.model or self.model
        for name, count in completion.usage.items():
            self.usage[name] = self.usage.get(name, 0) + count

    def metadata(self) -> dict[str, Any]:
        return {"model": self.model, "toolCalls": self.tool_calls, "usage": self.usage}


def reply(user_message_id: uuid.UUID, backend: Backend | None = None) -> uuid.UUID | None:
    """Answer the user message; the id of the assistant message written, or None when there was
    nothing to do (already answered, being answered by another worker, or not answerable)."""
    turn = _Turn()
    try:
        return _answer(user_message_id, backend, turn)
    except Exception as exc:  # whatever went wrong, the merchant gets an answer saying so
        db.session.rollback()
        log.warning("assistant reply to %s failed: %s", user_message_id, _describe(exc), exc_info=True)
        return _write_failure(user_message_id, exc, turn)


def reply_pending() -> int:
    """Beat sweep: hand again to the workers user messages whose reply a lost task never wrote."""
    now = utcnow()
    pending = db.session.scalars(
        _awaiting_reply().where(Message.created_at.between(now - PENDING_UNTIL, now - PENDING_AFTER))
        .order_by(Message.created_at).limit(PENDING_BATCH)
    ).all()
    db.session.commit()
    for message_id in pending:
        enqueue_after_commit(tasks.ASSISTANT_REPLY, str(message_id))
    return len(pending)


def _answer(user_message_id: uuid.UUID, backend: Backend | None, turn: _Turn) -> uuid.UUID | None:
    message = _claim(user_message_id)
    if message is None:
        db.session.rollback()  # releases the lock at once
        return None
    conversation = message.conversation
    chat = [{"role": "system", "content": SYSTEM_PROMPT.format(now=utcnow().strftime("%Y-%m-%d %H:%M"))},
            *_history(message)]
    model = backend or backend_for(current_app.config["HERALD_SETTINGS"])
    content = _converse(model, conversation, chat, turn)
    answer = _store(message, content, turn.metadata())
    db.session.commit()
    return answer.id


def _write_failure(user_message_id: uuid.UUID, exc: Exception, turn: _Turn) -> uuid.UUID | None:
    # What the tools wrote was rolled back with the reply, so only the error and usage are recorded.
    message = _claim(user_message_id)
    if message is None:
        db.session.rollback()
        return None
    answer = _store(message, FAILURE_TEXT, {"model": turn.model, "usage": turn.usage, "error": _describe(exc)})
    db.session.commit()
    return answer.id


def _claim(user_message_id: uuid.UUID) -> Message | None:
    """The user message, locked for this transaction, if it is still waiting for its reply."""
    key = sa.func.hashtextextended(f"assistant.reply:{user_message_id}", 0)
    if not db.session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(key))):
        return None  # another worker is writing this reply right now
    return db.session.scalar(_awaiting_reply(Message).where(Message.id == user_message_id))


def _awaiting_reply(*columns: Any) -> sa.Select:
    """User messages in conversations that are not deleted and with no assistant reply yet."""
    answer = orm.aliased(Message)
    answered = sa.select(answer.id).where(
        answer.conversation_id == Message.conversation_id, answer.role == "assistant",
        answer.meta["replyTo"].astext == sa.cast(Message.id, sa.Text),
    ).exists()
    return (
        sa.select(*(columns or (Message.id,)))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.role == "user", Conversation.status != "deleted", ~answered)
    )


def _history(message: Message) -> list[dict[str, Any]]:
    """The conversation up to this message, oldest first, trimmed to the budget keeping the newest.
    Earlier apologies are left out: they carry nothing the model should build on."""
    rows = db.session.scalars(
        sa.select(Message)
        .where(Message.conversation_id == message.conversation_id, Message.created_at <= message.created_at,
               Message.id != message.id)
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(HISTORY_MAX_MESSAGES)
    )
    kept, budget = [{"role": "user", "content": message.content}], HISTORY_CHAR_BUDGET - len(message.content)
    for row in rows:
        if row.role == "assistant" and (row.meta or {}).get("error"):
            continue
        budget -= len(row.content)
        if budget < 0:
            break
        kept.append({"role": row.role, "content": row.content})
    return kept[::-1]


def _converse(backend: Backend, conversation: Conversation, chat: list[dict[str, Any]], turn: _Turn) -> str:
    """Model rounds until it answers in text; tools run between rounds. The last round offers no
    tools, so the model has to answer with what it has."""
    started = time.monotonic()
    for round_number in range(MAX_ROUNDS):
        last = round_number == MAX_ROUNDS - 1 or time.monotonic() - started > DEADLINE_SECONDS
        completion = backend.complete(chat, [] if last else TOOLS)
        turn.add(completion)
        if last or not completion.tool_calls:
            answer = completion.content or ""
            if not answer.strip():
                raise BackendError("The model returned no answer.")
            return answer
        chat.append(_assistant_turn(completion))
        chat.extend(_run_calls(conversation, completion.tool_calls, turn))
    raise AssertionError("unreachable")  # the last round always returns or raises


def _run_calls(conversation: Conversation, calls: list[ToolCall], turn: _Turn) -> list[dict[str, Any]]:
    results = []
    for call in calls:
        created = ONE_PER_MESSAGE.get(call.name)
        if created and any(c["name"] == call.name and created in c["result"] for c in turn.tool_calls):
            kind = "campaign" if call.name == "create_draft_campaign" else "flow"
            result = {"error": f"A draft {kind} was already created for this message; refer to that one."}
        else:
            result = run_tool(conversation.user_id, conversation.id, call)
        record = {"id": call.id, "name": call.name, "arguments": call.arguments, "result": result}
        turn.tool_calls.append({**record, "error": call.error} if call.error else record)
        results.append({"role": "tool", "tool_call_id": call.id, "content": _tool_content(result)})
    return results


def _tool_content(result: dict[str, Any]) -> str:
    """The result as the model reads it: JSON, cut to a bound but still an object that parses."""
    content = json.dumps(result, default=str)
    if len(content) <= TOOL_RESULT_MAX_CHARS:
        return content
    return json.dumps({"truncated": True, "partial": content[:TOOL_RESULT_MAX_CHARS]})


def _assistant_turn(completion: Completion) -> dict[str, Any]:
    return {"role": "assistant", "content": completion.content, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
        for call in completion.tool_calls
    ]}


def _store(message: Message, content: str, metadata: dict[str, Any]) -> Message:
    # Stamped when written, not when the reply's long transaction began: a client polling for new
    # messages must not find the answer dated before messages it has already seen.
    answer = Message(conversation_id=message.conversation_id, role="assistant", content=content,
                     meta={"replyTo": str(message.id), **metadata}, created_at=sa.func.clock_timestamp())
    db.session.add(answer)
    db.session.flush()
    return answer


def _describe(exc: Exception) -> str:
    # A backend's message is written for people; anything else may be an internal detail.
    if isinstance(exc, BackendError):
        return str(exc)[:500] or "The model could not answer."
    return f"Internal error ({type(exc).__name__})."
