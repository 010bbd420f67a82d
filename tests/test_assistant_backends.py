"""The assistant's model backends.

OpenAIBackend is driven over real HTTP by a local OpenAI-compatible emulator (scripted tool calls,
malformed arguments, timeouts, 429/5xx/401). The built-in assistant is checked request by request
against the grammar the README documents: the tool it calls, its exact arguments (which must pass
the same validation the API applies) and the answer it composes from the tool's result.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.assistant.backend import BackendError, Completion, backend_for
from app.assistant.builtin import HELP, PLACEHOLDER_SENDER, BuiltinAssistant
from app.assistant.openai_backend import OpenAIBackend
from app.assistant.tools import TOOLS, DraftCampaignArguments
from app.channels.configs import load_channel_config
from app.config import Settings, load_settings
from app.services.audience_sql import validate_definition
from app.sources.http import RetryPolicy
from tests.conftest import TEST_ENV
from tests.emulators.openai_chat import (
    DEFAULT_API_KEY,
    OpenAIChatEmulator,
    call,
    delayed,
    error,
    raw,
    text,
    tool_calls,
)

NOW = datetime(2025, 3, 5, 14, 30, tzinfo=UTC)  # a Wednesday afternoon
USER_TEXT = "How many orders did we get this week?"
MESSAGES = [{"role": "system", "content": "You are a test assistant."}, {"role": "user", "content": USER_TEXT}]


def settings_for(base_url: str, **env: str) -> Settings:
    return load_settings({**TEST_ENV, "LLM_BASE_URL": base_url, "LLM_API_KEY": DEFAULT_API_KEY,
                          "LLM_MODEL": "emulated-gpt", **env})


@pytest.fixture()
def emulator() -> Iterator[OpenAIChatEmulator]:
    with OpenAIChatEmulator() as server:
        yield server
    assert not server.server_errors, server.server_errors


@pytest.fixture()
def sleeps() -> list[float]:
    """The waits the backend asked for between attempts (recorded, not slept, to keep tests fast)."""
    return []


def make_backend(emulator: OpenAIChatEmulator, sleeps: list[float], **env: str) -> OpenAIBackend:
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_wait=5, connect_timeout=1,
                         read_timeout=0.3, sleep=sleeps.append)
    return OpenAIBackend(settings_for(emulator.api_base_url, **env), policy=policy)


# --- OpenAIBackend --------------------------------------------------------------------------------

def test_request_carries_model_messages_tools_and_the_key_as_bearer(emulator, sleeps):
    emulator.script([text("You had 3 orders.")])
    make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)

    [request] = emulator.requests_to("/v1/chat/completions", "POST")
    assert request.header("Authorization") == f"Bearer {DEFAULT_API_KEY}"
    assert request.json == {"model": "emulated-gpt", "messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto"}


def test_without_tools_no_tool_choice_is_sent(emulator, sleeps):
    emulator.script([text("Final answer.")])
    completion = make_backend(emulator, sleeps).complete(MESSAGES, [])

    assert completion.content == "Final answer."
    assert emulator.completions() == [{"model": "emulated-gpt", "messages": MESSAGES}]


def test_text_answer_with_model_and_usage(sleeps):
    with OpenAIChatEmulator(model="emulated-gpt-2025-01-01") as emulator:
        emulator.script([text("You had 3 orders.", usage={"prompt_tokens": 120, "completion_tokens": 8,
                                                           "total_tokens": 128})])
        completion = make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)

    assert completion == Completion(content="You had 3 orders.", tool_calls=[], model="emulated-gpt-2025-01-01",
                                    usage={"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128})


def test_tool_calls_are_parsed(emulator, sleeps):
    everyone = {"definition": {"match": "all", "conditions": []}}
    emulator.script([tool_calls(call("data_summary", {"windowDays": 7}, "call_a"),
                                call("preview_audience", everyone, "call_b"))])
    completion = make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)

    assert completion.content is None
    assert [(c.id, c.name, c.arguments, c.error) for c in completion.tool_calls] == [
        ("call_a", "data_summary", {"windowDays": 7}, None),
        ("call_b", "preview_audience", everyone, None),
    ]


@pytest.mark.parametrize(("arguments", "problem"), [
    ('{"windowDays": 7', "not valid JSON"),
    ("[7]", "must be a JSON object"),
    ('"seven"', "must be a JSON object"),
])
def test_malformed_tool_arguments_surface_as_the_calls_error(emulator, sleeps, arguments, problem):
    emulator.script([tool_calls(call("data_summary", arguments, "call_bad"), call("data_summary", {}, "call_ok"))])
    bad, ok = make_backend(emulator, sleeps).complete(MESSAGES, TOOLS).tool_calls

    assert (bad.id, bad.name, bad.arguments) == ("call_bad", "data_summary", {})
    assert problem in bad.error
    assert (ok.arguments, ok.error) == ({}, None)


def test_a_timeout_is_retried_then_answered(emulator, sleeps):
    emulator.script([delayed(1.0, text("too late")), text("in time")])
    completion = make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)

    assert completion.content == "in time"
    assert len(emulator.completions()) == 2
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.05


def test_timeouts_exhaust_the_retries_then_backend_error(emulator, sleeps):
    emulator.script([delayed(1.0, text("too late"))] * 3)
    with pytest.raises(BackendError, match="ReadTimeout.*3 attempts"):
        make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)
    assert len(emulator.completions()) == 3
    assert len(sleeps) == 2  # no wait after the last attempt


def test_rate_limit_honours_retry_after_then_succeeds(emulator, sleeps):
    emulator.rate_limit_next(1, retry_after=2)
    emulator.script([text("after the limit")])
    completion = make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)

    assert completion.content == "after the limit"
    assert sleeps == [2.0]
    assert len(emulator.requests) == 2


def test_server_errors_are_retried_with_backoff(emulator, sleeps):
    emulator.fail_next(2, status=500)
    emulator.script([text("recovered")])

    assert make_backend(emulator, sleeps).complete(MESSAGES, TOOLS).content == "recovered"
    assert len(emulator.requests) == 3
    assert len(sleeps) == 2 and all(0 <= wait <= 0.05 for wait in sleeps)


def test_server_errors_exhaust_the_retries(emulator, sleeps):
    emulator.fail_next(3, status=503)
    emulator.script([text("never reached")])
    with pytest.raises(BackendError, match="HTTP 503"):
        make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)
    assert len(emulator.requests) == 3
    assert emulator.pending == 1


def test_a_refused_key_is_not_retried(emulator, sleeps):
    with pytest.raises(BackendError, match="LLM_API_KEY") as caught:
        make_backend(emulator, sleeps, LLM_API_KEY="sk-wrong-key").complete(MESSAGES, TOOLS)
    assert len(emulator.requests) == 1 and sleeps == []
    assert "sk-wrong-key" not in str(caught.value)


def test_other_client_errors_are_not_retried_and_do_not_echo_the_provider_message(emulator, sleeps):
    emulator.script([error(400, f"This model's maximum context length is exceeded: {USER_TEXT}",
                           code="context_length_exceeded")])
    with pytest.raises(BackendError, match="HTTP 400: invalid_request_error/context_length_exceeded") as caught:
        make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)
    assert len(emulator.requests) == 1 and sleeps == []
    assert USER_TEXT not in str(caught.value)


@pytest.mark.parametrize("step", [raw("<html><body>Bad gateway page</body></html>"),
                                  raw('{"choices": []}', content_type="application/json"),
                                  raw('{"error": {"type": "server_error"}}', content_type="application/json")])
def test_an_answer_without_a_message_is_a_backend_error(emulator, sleeps, step):
    emulator.script([step])
    with pytest.raises(BackendError, match="without a message"):
        make_backend(emulator, sleeps).complete(MESSAGES, TOOLS)


def test_neither_the_key_nor_the_conversation_is_logged(emulator, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.fail_next(1, status=502)
    emulator.script([text("fine")])
    backend = make_backend(emulator, sleeps)
    backend.complete(MESSAGES, TOOLS)

    assert caplog.records, "a retried call is worth a log line"
    for record in caplog.records:
        assert DEFAULT_API_KEY not in record.getMessage()
        if record.levelno >= logging.INFO:
            assert USER_TEXT not in record.getMessage()
    assert DEFAULT_API_KEY not in repr(backend)


def test_the_backend_follows_the_settings(emulator):
    assert isinstance(backend_for(settings_for(emulator.api_base_url)), OpenAIBackend)
    assert isinstance(backend_for(load_settings(TEST_ENV)), BuiltinAssistant)


# --- The built-in assistant ---------------------------------------------------------------------

builtin = BuiltinAssistant(now=lambda: NOW)


def ask(message: str, tools: list[dict[str, Any]] = TOOLS) -> Completion:
    return builtin.complete([{"role": "system", "content": "x"}, {"role": "user", "content": message}], tools)


def answer_with(message: str, result: dict[str, Any]) -> str:
    """The built-in's final answer once the loop has run its tool call and returned `result`."""
    first = ask(message)
    [tool_call] = first.tool_calls
    chat = [{"role": "user", "content": message},
            {"role": "assistant", "content": None, "tool_calls": [{"id": tool_call.id, "type": "function", "function": {
                "name": tool_call.name, "arguments": json.dumps(tool_call.arguments)}}]},
            {"role": "tool", "tool_call_id": tool_call.id, "content": json.dumps(result)}]
    final = builtin.complete(chat, TOOLS)
    assert final.tool_calls == [] and final.content
    return final.content


def consent(channel: str) -> dict[str, Any]:
    return {"type": "consent", "channel": channel}


def event(name: str, within: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "event", "event": name, **({"withinDays": within} if within else {}), **extra}


DRAFTS = [
    ("email everyone who abandoned checkout in the last 7 days", ["email"],
     [event("checkout_started", 7), event("order_placed", 7, negate=True), consent("email")]),
    ("text US customers who bought in the last 30 days", ["sms"],
     [{"type": "attribute", "field": "country", "op": "eq", "value": "US"}, event("order_placed", 30), consent("sms")]),
    ("Email everyone", ["email"], [consent("email")]),
    ("push everyone who viewed a product but didn't buy this week", ["push"],
     [event("product_viewed", 7), event("order_placed", 7, negate=True), consent("push")]),
    ("message US and Canadian customers on WhatsApp", ["whatsapp"],
     [{"type": "attribute", "field": "country", "op": "in", "value": ["US", "CA"]}, consent("whatsapp")]),
    ("sms customers in the UK who added to cart yesterday", ["sms"],
     [{"type": "attribute", "field": "country", "op": "eq", "value": "GB"}, event("added_to_cart", 2), consent("sms")]),
    ("email people who bought at least 3 times", ["email"], [event("order_placed", minCount=3), consent("email")]),
    ("whatsapp everyone who abandoned their cart today", ["whatsapp"],
     [event("added_to_cart", 1), event("order_placed", 1, negate=True), consent("whatsapp")]),
    ("send a text message to customers who haven't ordered in the last 2 months", ["sms"],  # bought before, though
     [event("order_placed"), event("order_placed", 60, negate=True), consent("sms")]),
    ("email and text new customers this month", ["email", "sms"],
     [event("customer_created", 30),
      {"type": "group", "match": "any", "conditions": [consent("email"), consent("sms")]}]),
]


@pytest.mark.parametrize(("message", "channel_types", "conditions"), DRAFTS)
def test_documented_campaign_requests_draft_the_right_campaign(message, channel_types, conditions):
    completion = ask(message)

    [tool_call] = completion.tool_calls
    assert (tool_call.name, tool_call.error, completion.content) == ("create_draft_campaign", None, None)
    arguments = tool_call.arguments
    definition = arguments["audience"]["definition"]
    assert definition == {"match": "all", "conditions": conditions}
    assert [channel["channelType"] for channel in arguments["channels"]] == channel_types
    assert "proposedScheduleAt" not in arguments
    # Everything the tool will be handed passes the rules the API applies.
    validate_definition(definition)
    for channel in arguments["channels"]:
        load_channel_config(channel["channelType"], channel["config"])
    DraftCampaignArguments(exclude=("config", "conversation_id")).load(arguments)


def test_a_draft_gets_editable_copy_for_each_channel():
    [tool_call] = ask("email, text, push and whatsapp everyone who abandoned checkout").tool_calls
    configs = {channel["channelType"]: channel["config"] for channel in tool_call.arguments["channels"]}

    assert configs["email"]["fromEmail"] == PLACEHOLDER_SENDER
    assert configs["email"]["subject"] == "You left something behind"
    assert "{{ contact.firstName or 'there' }}" in configs["email"]["html"]
    assert configs["sms"]["body"].endswith("Reply STOP to opt out.")
    assert configs["push"]["title"] == "You left something behind"
    assert configs["whatsapp"] == {"templateName": "hello_world", "language": "en_US", "parameters": []}


def test_a_topic_and_a_quoted_message_shape_the_copy():
    [tool_call] = ask('text everyone who bought about our Summer Sale "Summer Sale: 20% off with SUN20"').tool_calls
    [sms] = tool_call.arguments["channels"]
    assert sms["config"] == {"body": "Summer Sale: 20% off with SUN20"}

    [tool_call] = ask("email everyone about our Summer Sale").tool_calls
    assert tool_call.arguments["channels"][0]["config"]["subject"] == "Our Summer Sale"


@pytest.mark.parametrize(("when", "proposed"), [
    ("tomorrow at 9am", "2025-03-06T09:00:00Z"),
    ("on friday at 10:30", "2025-03-07T10:30:00Z"),
    ("on June 3", "2025-06-03T09:00:00Z"),
    ("on 2025-12-24 at noon", "2025-12-24T12:00:00Z"),
    ("at 5pm", "2025-03-05T17:00:00Z"),
    ("at 9am", "2025-03-06T09:00:00Z"),  # a bare time already past today means tomorrow
    ("tonight", "2025-03-05T19:00:00Z"),
])
def test_a_send_time_is_only_proposed_in_utc(when, proposed):
    [tool_call] = ask(f"email everyone who abandoned checkout in the last 7 days, {when}").tool_calls
    assert tool_call.arguments["proposedScheduleAt"] == proposed
    assert tool_call.arguments["audience"]["definition"]["conditions"][0] == event("checkout_started", 7)


def test_a_send_time_already_past_is_not_proposed():
    message = "text everyone today at 9am"
    [tool_call] = ask(message).tool_calls
    assert "proposedScheduleAt" not in tool_call.arguments

    answer = answer_with(message, draft_result(size=5))
    assert "already passed" in answer


def draft_result(size: int, proposed: str | None = None, channels: tuple[str, ...] = ("email",)) -> dict[str, Any]:
    return {"campaignId": "5f0c6b1e-0000-4000-8000-000000000001", "name": "Everyone (email)", "status": "draft",
            "proposedScheduleAt": proposed, "channels": [{"id": "c1", "channelType": kind} for kind in channels],
            "audience": {"id": "a1", "name": "Everyone", "size": size}}


def test_the_answer_after_a_draft_says_what_was_drafted_and_that_nothing_is_sent():
    answer = answer_with("email everyone who abandoned checkout in the last 7 days, tomorrow at 9am",
                         draft_result(size=42, proposed="2025-03-06T09:00:00Z"))

    assert "42 contacts match" in answer
    assert "only a draft" in answer and "nothing is sent" in answer
    assert "Thursday 06 March 2025 at 09:00 UTC" in answer
    assert PLACEHOLDER_SENDER in answer


@pytest.mark.parametrize(("message", "window", "result", "expected"), [
    ("how many orders this week?", 7, {"order_placed": 12}, "You had 12 orders in the last 7 days."),
    ("How many checkouts today", 1, {"checkout_started": 1}, "You had 1 checkout started in the last day."),
    ("how many orders in the last 90 days?", 90, {}, "You had 0 orders in the last 90 days."),
    ("how many new customers this month?", 30, {"customer_created": 4}, "You had 4 new customers in the last 30 days."),
    ("How many customers do I have?", 30, {"customer_created": 8},
     "You have 340 contacts; 8 new customers signed up in the last 30 days."),
])
def test_counting_questions_read_the_data_summary(message, window, result, expected):
    [tool_call] = ask(message).tool_calls
    assert (tool_call.name, tool_call.arguments) == ("data_summary", {"windowDays": window})

    summary = {"windowDays": window, "sources": [], "events": {"byType": result, "rawEvents": 99},
               "contacts": {"total": 340, "consent": {}}}
    assert answer_with(message, summary) == expected


@pytest.mark.parametrize(("message", "conditions"), [
    ("preview everyone who bought at least 2 times", [event("order_placed", minCount=2)]),
    ("how many people would get an email to everyone who abandoned checkout this week?",
     [event("checkout_started", 7), event("order_placed", 7, negate=True), consent("email")]),
    ("how many customers abandoned checkout this week?",
     [event("checkout_started", 7), event("order_placed", 7, negate=True)]),
    ("preview US customers", [{"type": "attribute", "field": "country", "op": "eq", "value": "US"}]),
])
def test_preview_requests_size_the_audience(message, conditions):
    [tool_call] = ask(message).tool_calls
    assert (tool_call.name, tool_call.arguments) == ("preview_audience",
                                                     {"definition": {"match": "all", "conditions": conditions}})
    validate_definition(tool_call.arguments["definition"])

    answer = answer_with(message, {"count": 17, "sample": [{"id": "x", "email": "ada@example.com"}]})
    assert answer.startswith("17 contacts match that audience right now (for example ada@example.com)")


def test_a_tool_error_is_reported():
    answer = answer_with("email everyone", {"error": "The arguments are not valid.",
                                            "details": {"channels": {"0": {"config": ["bad"]}}}})
    assert answer.startswith("I couldn't do that: The arguments are not valid.")


@pytest.mark.parametrize("message", ["hello", "What can you do?", "launch the winter campaign now",
                                     "schedule it for tomorrow", "email", "email my dog", "email everyone today",
                                     "how many orders by country?", ""])
def test_anything_else_gets_the_list_of_what_it_can_do(message):
    completion = ask(message)
    assert completion.tool_calls == []
    assert completion.content.endswith(HELP)


def test_it_reads_only_the_last_user_message_and_is_deterministic():
    chat = [{"role": "user", "content": "email everyone"}, {"role": "assistant", "content": "Drafted."},
            {"role": "user", "content": [{"type": "text", "text": "how many orders this week?"}]}]
    first, again = builtin.complete(chat, TOOLS), builtin.complete(chat, TOOLS)

    assert first == again
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("data_summary", {"windowDays": 7})]


def test_it_never_calls_a_tool_it_was_not_offered():
    completion = ask("how many orders this week?", tools=[])
    assert completion.tool_calls == [] and completion.content


# --- End to end through the conversation loop -----------------------------------------------------

@pytest.fixture()
def chat(app, committed_db):
    """A merchant's id, their conversation's id and a function that posts a user message (committed)."""
    from app.extensions import db
    from app.models import Conversation, Message, User

    with app.app_context():
        user = User(email="assistant-backends@example.com", password_hash="x", is_verified=True)
        db.session.add(user)
        db.session.flush()
        conversation = Conversation(user_id=user.id, title="Ideas")
        db.session.add(conversation)
        db.session.commit()

        def post(content: str) -> Message:
            message = Message(conversation_id=conversation.id, role="user", content=content)
            db.session.add(message)
            db.session.commit()
            return message

        yield user.id, conversation.id, post


def add_shopper(user_id, email: str, events: list[str], email_consent: str = "subscribed") -> None:
    from app.extensions import db
    from app.models import Contact, ContactActivity, utcnow

    contact = Contact(user_id=user_id, email=email, attributes={}, external_ids={}, consent={"email": email_consent},
                      consent_sources={})
    db.session.add(contact)
    db.session.flush()
    db.session.add_all(ContactActivity(user_id=user_id, contact_id=contact.id, event_type=kind, original_name=kind,
                                       occurred_at=utcnow() - timedelta(days=2), properties={}) for kind in events)


def test_reply_with_the_builtin_drafts_the_campaign(app, chat):
    from app.extensions import db
    from app.models import Campaign, Message
    from app.services import assistant

    user_id, conversation_id, post = chat
    add_shopper(user_id, "left@example.com", ["checkout_started"])
    add_shopper(user_id, "bought@example.com", ["checkout_started", "order_placed"])
    add_shopper(user_id, "optedout@example.com", ["checkout_started"], email_consent="unsubscribed")
    now = datetime.now(UTC)
    message = post("email everyone who abandoned checkout in the last 7 days, tomorrow at 9am")
    answer_id = assistant.reply(message.id, backend=BuiltinAssistant(now=lambda: now))
    db.session.remove()

    campaign = db.session.scalars(sa.select(Campaign).where(Campaign.conversation_id == conversation_id)).one()
    proposed = f"{now.date() + timedelta(days=1)}T09:00:00Z"
    assert (campaign.status, campaign.scheduled_at) == ("draft", None)
    assert campaign.config == {"proposedScheduleAt": proposed}
    [audience] = campaign.audiences
    assert audience.definition == {"match": "all", "conditions": [
        event("checkout_started", 7), event("order_placed", 7, negate=True), consent("email")]}
    assert audience.last_size == 1
    [channel] = campaign.channels
    assert channel.channel_type == "email" and channel.config["fromEmail"] == PLACEHOLDER_SENDER
    answer = db.session.get(Message, answer_id)
    assert "1 contact matches" in answer.content and "only a draft" in answer.content
    assert [c["name"] for c in answer.meta["toolCalls"]] == ["create_draft_campaign"]
    assert answer.meta["model"] == "herald-builtin"


def test_reply_with_the_builtin_drafts_a_flow_and_never_activates_it(app, chat):
    from app.extensions import db
    from app.models import Flow, Message
    from app.services import assistant, flows

    user_id, _, post = chat
    message = post("remind people who abandoned checkout after 1 hour")
    answer_id = assistant.reply(message.id, backend=BuiltinAssistant(now=lambda: datetime.now(UTC)))
    db.session.remove()

    flow = db.session.scalars(sa.select(Flow).where(Flow.user_id == user_id)).one()
    assert (flow.status, flow.trigger, flow.exit_when, flow.reentry) == (
        "draft", {"event": "checkout_started"}, [{"event": "order_placed"}], {"mode": "once"})
    [step] = flow.steps
    assert (step.delay_seconds, step.channel.channel_type) == (3600, "email")
    # The flow's own campaign is not a campaign of the merchant's.
    assert flows.stats(user_id, flow.id).entered == 0
    answer = db.session.get(Message, answer_id)
    assert [c["name"] for c in answer.meta["toolCalls"]] == ["draft_flow"]


def test_reply_through_the_model_path_survives_a_malformed_call_and_a_timeout(app, chat, emulator, sleeps):
    from app.extensions import db
    from app.models import Campaign, Message
    from app.services import assistant

    _, _, post = chat
    emulator.script([
        tool_calls(call("data_summary", {"windowDays": 7}, "call_1")),
        delayed(1.0, text("too late")),  # the next round times out once, then is answered
        tool_calls(call("create_draft_campaign", '{"name": "Winback", "channels": [', "call_2")),
        text("I couldn't create the draft; the arguments were cut off."),
    ])
    message = post(USER_TEXT)
    answer_id = assistant.reply(message.id, backend=make_backend(emulator, sleeps))
    db.session.remove()

    answer = db.session.get(Message, answer_id)
    assert answer.content == "I couldn't create the draft; the arguments were cut off."
    summary, draft = answer.meta["toolCalls"]
    assert summary["name"] == "data_summary" and summary["result"]["windowDays"] == 7
    assert draft["name"] == "create_draft_campaign" and "not valid JSON" in draft["error"]
    assert "error" in draft["result"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0
    # What the model was shown: each round carries the earlier tool results under their call ids.
    last = emulator.completions()[-1]["messages"]
    assert [m.get("tool_call_id") for m in last if m["role"] == "tool"] == ["call_1", "call_2"]
    assert answer.meta["usage"]["total_tokens"] > 0


def test_reply_through_the_model_path_apologises_when_the_model_never_answers(app, chat, emulator, sleeps):
    from app.extensions import db
    from app.models import Message
    from app.services import assistant

    _, _, post = chat
    emulator.script([delayed(1.0, text("too late"))] * 3)
    message = post(USER_TEXT)
    answer_id = assistant.reply(message.id, backend=make_backend(emulator, sleeps))
    db.session.remove()

    answer = db.session.get(Message, answer_id)
    assert answer.content == assistant.FAILURE_TEXT
    assert "could not be reached" in answer.meta["error"]
