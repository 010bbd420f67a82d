"""Conversations and messages through HTTP, and the assistant's replies: tools run and recorded,
failures answered, one reply per message (also under concurrency), tenant isolation of every tool,
draft campaigns that are never scheduled, the lost-reply sweep, and a real worker end to end.

The model is a scripted `Backend` (a test double of the model only: the loop, the tools, the
database and the worker are real). The OpenAI-compatible HTTP path is tested with its backend.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.assistant.backend import BackendError, Completion, ToolCall
from app.assistant.tools import run_tool
from app.config import load_settings
from app.extensions import db
from app.models import (
    Audience,
    Campaign,
    Contact,
    ContactActivity,
    Conversation,
    Message,
    utcnow,
)
from app.services import assistant
from tests.conftest import TEST_ENV
from tests.support.accounts import signed_in

CONVERSATIONS = "/api/v1/conversations"
EVERYONE = {"match": "all", "conditions": []}
EMAIL = {"fromEmail": "shop@example.com", "subject": "Hi {{ contact.firstName }}", "text": "Come back!"}


class ScriptedModel:
    """Answers each round with the next scripted Completion (or raises it), recording what it saw."""

    def __init__(self, *script: Completion | Exception, delay: float = 0.0):
        self.script, self.delay, self.seen = list(script), delay, []

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        self.seen.append((json.loads(json.dumps(messages)), [t["function"]["name"] for t in tools]))
        time.sleep(self.delay)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def says(text: str, **usage: int) -> Completion:
    return Completion(content=text, tool_calls=[], model="scripted-1", usage=usage)


def calls(*tool_calls: ToolCall, **usage: int) -> Completion:
    return Completion(content=None, tool_calls=list(tool_calls), model="scripted-1", usage=usage)


def call(tool: str, /, error: str | None = None, **arguments: Any) -> ToolCall:
    return ToolCall(id=f"call_{uuid.uuid4().hex[:8]}", name=tool, arguments=arguments, error=error)


# --- Helpers ------------------------------------------------------------------------------------

def merchant(client) -> tuple[uuid.UUID, dict[str, str]]:
    tokens, headers = signed_in(client)
    return uuid.UUID(tokens["user"]["id"]), headers


def conversation(client, headers, title: str | None = "Spring") -> dict:
    response = client.post(CONVERSATIONS, headers=headers, json={"title": title})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def post(client, headers, conversation_id: str, content: str = "How are my customers doing?") -> dict:
    response = client.post(f"{CONVERSATIONS}/{conversation_id}/messages", headers=headers, json={"content": content})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def contacts(user_id: uuid.UUID, *emails: str) -> None:
    db.session.add_all(Contact(user_id=user_id, email=email, consent={"email": "subscribed"}) for email in emails)
    db.session.commit()


def _backdate(model: type, row_id: str, by: timedelta) -> None:
    # Rows written in one test share the outer transaction's now().
    db.session.execute(sa.update(model).where(model.id == uuid.UUID(row_id)).values(created_at=model.created_at - by))
    db.session.commit()


def replies(message_id: str) -> list[Message]:
    db.session.expire_all()
    return list(db.session.scalars(
        sa.select(Message).where(Message.role == "assistant", Message.meta["replyTo"].astext == message_id)
    ))


def answer(message_id: str, model: ScriptedModel) -> Message:
    assert assistant.reply(uuid.UUID(message_id), backend=model) is not None
    (only,) = replies(message_id)
    return only


# --- Conversations and messages over HTTP ---------------------------------------------------------

def test_conversation_crud_and_soft_delete(client, app_ctx):
    _, headers = merchant(client)
    first, second = conversation(client, headers, "First"), conversation(client, headers, None)
    _backdate(Conversation, first["id"], timedelta(minutes=1))
    assert first["status"] == "active" and second["title"] is None
    assert [c["id"] for c in client.get(CONVERSATIONS, headers=headers).get_json()] == [second["id"], first["id"]]

    url = f"{CONVERSATIONS}/{first['id']}"
    changed = client.patch(url, headers=headers, json={"title": "Renamed", "status": "archived"})
    assert changed.status_code == 200
    assert {k: changed.get_json()[k] for k in ("id", "title", "status")} == {
        "id": first["id"], "title": "Renamed", "status": "archived"}
    archived = client.get(CONVERSATIONS, headers=headers, query_string={"status": "archived"}).get_json()
    assert [c["id"] for c in archived] == [first["id"]]

    assert client.delete(url, headers=headers).status_code == 204
    assert client.delete(url, headers=headers).status_code == 204  # already deleted: same outcome
    assert [c["id"] for c in client.get(CONVERSATIONS, headers=headers).get_json()] == [second["id"]]
    deleted = client.get(CONVERSATIONS, headers=headers, query_string={"status": "deleted"}).get_json()
    assert [c["id"] for c in deleted] == [first["id"]]
    assert client.get(url, headers=headers).get_json()["status"] == "deleted"
    assert client.patch(url, headers=headers, json={"status": "active"}).status_code == 409
    refused = client.post(f"{url}/messages", headers=headers, json={"content": "hello?"})
    assert refused.status_code == 409 and refused.get_json()["code"] == "conflict"


@pytest.mark.parametrize("body", [
    {"status": "deleted"}, {"status": "closed"}, {"title": ""}, {"title": "x" * 201}, {"title": 5},
])
def test_conversation_updates_are_validated(client, app_ctx, body):
    _, headers = merchant(client)
    created = conversation(client, headers)
    response = client.patch(f"{CONVERSATIONS}/{created['id']}", headers=headers, json=body)
    assert response.status_code == 422, response.get_json()


def test_messages_are_posted_with_202_and_listed_oldest_first(client, app_ctx):
    _, headers = merchant(client)
    chat = conversation(client, headers)
    first = post(client, headers, chat["id"], "Hello")
    second = post(client, headers, chat["id"], "Anyone there?")
    assert first == first | {"conversationId": chat["id"], "role": "user", "content": "Hello", "metadata": None}
    listed = client.get(f"{CONVERSATIONS}/{chat['id']}/messages", headers=headers, query_string={"page_size": 1})
    assert [m["id"] for m in listed.get_json()] == [first["id"]]
    assert json.loads(listed.headers["X-Pagination"])["total"] == 2
    page_two = client.get(f"{CONVERSATIONS}/{chat['id']}/messages", headers=headers,
                          query_string={"page_size": 1, "page": 2}).get_json()
    assert [m["id"] for m in page_two] == [second["id"]]


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "   "}, {"content": "x" * 10_001},
                                  {"content": 7}, {"content": "a\x00b"}])
def test_message_content_is_validated(client, app_ctx, body):
    _, headers = merchant(client)
    chat = conversation(client, headers)
    response = client.post(f"{CONVERSATIONS}/{chat['id']}/messages", headers=headers, json=body)
    assert response.status_code == 422, response.get_json()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0


def test_another_merchants_conversation_is_not_found(client, app_ctx):
    _, owner = merchant(client)
    _, stranger = merchant(client)
    chat = conversation(client, owner)
    url = f"{CONVERSATIONS}/{chat['id']}"
    assert client.get(url, headers=stranger).status_code == 404
    assert client.patch(url, headers=stranger, json={"title": "mine"}).status_code == 404
    assert client.delete(url, headers=stranger).status_code == 404
    assert client.get(f"{url}/messages", headers=stranger).status_code == 404
    assert client.post(f"{url}/messages", headers=stranger, json={"content": "hi"}).status_code == 404
    assert client.get(CONVERSATIONS, headers=stranger).get_json() == []
    assert client.get(url, headers=owner).get_json()["title"] == "Spring"
    assert client.get(f"{CONVERSATIONS}/not-a-uuid", headers=owner).status_code == 404


# --- Replies ------------------------------------------------------------------------------------

def test_reply_runs_tools_and_records_them(client, app_ctx):
    user_id, headers = merchant(client)
    contacts(user_id, "a@example.com", "b@example.com")
    person = db.session.scalar(sa.select(Contact).where(Contact.email == "a@example.com"))
    db.session.add(ContactActivity(user_id=user_id, contact_id=person.id, event_type="checkout_started",
                                   original_name="checkouts/create", occurred_at=utcnow() - timedelta(days=2)))
    db.session.commit()
    chat = conversation(client, headers)
    message = post(client, headers, chat["id"])
    model = ScriptedModel(
        calls(call("data_summary", windowDays=7), call("preview_audience", definition=EVERYONE, sampleSize=1),
              prompt_tokens=100, completion_tokens=20),
        says("You have 2 contacts; 1 started a checkout this week.", prompt_tokens=150, completion_tokens=30),
    )
    reply = answer(message["id"], model)

    assert reply.content == "You have 2 contacts; 1 started a checkout this week."
    assert reply.meta["model"] == "scripted-1" and reply.meta["usage"] == {"prompt_tokens": 250, "completion_tokens": 50}
    summary, preview = reply.meta["toolCalls"]
    assert summary["name"] == "data_summary" and summary["arguments"] == {"windowDays": 7}
    assert summary["result"]["events"] == {"byType": {"checkout_started": 1}, "rawEvents": 0}
    assert summary["result"]["contacts"] == {"total": 2, "consent": {"email": {"subscribed": 2}}}
    assert preview["result"]["count"] == 2 and len(preview["result"]["sample"]) == 1
    (first_round, _), (second_round, _) = model.seen
    assert first_round[0]["role"] == "system" and first_round[-1] == {"role": "user", "content": message["content"]}
    tool_messages = [m for m in second_round if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [summary["id"], preview["id"]]
    assert json.loads(tool_messages[1]["content"])["count"] == 2
    listed = client.get(f"{CONVERSATIONS}/{chat['id']}/messages", headers=headers).get_json()
    assert [(m["role"], m["metadata"] and m["metadata"]["replyTo"]) for m in listed] == [
        ("user", None), ("assistant", message["id"])]


def test_malformed_and_unknown_tool_calls_are_recorded_not_run(client, app_ctx):
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    model = ScriptedModel(
        calls(call("preview_audience", error="Expecting value: line 1 column 12"), call("launch_campaign")),
        says("Let me try that differently."),
    )
    malformed, unknown = answer(message["id"], model).meta["toolCalls"]
    assert malformed["error"] == "Expecting value: line 1 column 12" and malformed["arguments"] == {}
    assert "could not be read" in malformed["result"]["error"]
    assert unknown["result"] == {"error": "unknown tool"}


def test_a_long_tool_result_reaches_the_model_cut_but_still_json(client, app_ctx, monkeypatch):
    monkeypatch.setattr(assistant, "TOOL_RESULT_MAX_CHARS", 40)
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    model = ScriptedModel(calls(call("data_summary")), says("ok"))
    reply = answer(message["id"], model)
    (_, _), (seen, _) = model.seen
    shown = json.loads(seen[-1]["content"])
    assert shown["truncated"] is True and len(shown["partial"]) == 40
    assert "contacts" in reply.meta["toolCalls"][0]["result"]  # the record keeps it whole


@pytest.mark.parametrize("failure, recorded", [
    (BackendError("The model endpoint timed out after 3 attempts."), "The model endpoint timed out after 3 attempts."),
    (RuntimeError("connection string postgres://secret"), "Internal error (RuntimeError)."),
])
def test_a_failure_is_answered_with_an_apology(client, app_ctx, failure, recorded):
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    reply = answer(message["id"], ScriptedModel(failure))
    assert "couldn't answer" in reply.content and reply.meta["error"] == recorded
    assert assistant.reply(uuid.UUID(message["id"]), backend=ScriptedModel(says("late"))) is None
    assert len(replies(message["id"])) == 1


def test_a_model_that_never_stops_calling_tools_must_answer_in_the_last_round(client, app_ctx):
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    rounds = [calls(call("data_summary")) for _ in range(assistant.MAX_ROUNDS - 1)]
    model = ScriptedModel(*rounds, says("Here is what I found."))
    assert answer(message["id"], model).content == "Here is what I found."
    assert [tools for _, tools in model.seen][-1] == [] and len(model.seen) == assistant.MAX_ROUNDS


def test_history_is_trimmed_to_the_budget_keeping_the_newest(client, app_ctx, monkeypatch):
    monkeypatch.setattr(assistant, "HISTORY_CHAR_BUDGET", 250)
    _, headers = merchant(client)
    chat = conversation(client, headers)
    old = [post(client, headers, chat["id"], f"{n}" * 100) for n in range(4)]
    current = post(client, headers, chat["id"], "And now?")
    later = post(client, headers, chat["id"], "Posted after")
    model = ScriptedModel(says("ok"))
    answer(current["id"], model)
    (seen, _), = model.seen
    assert [m["content"] for m in seen[1:]] == [old[2]["content"], old[3]["content"], "And now?"]
    assert later["content"] not in json.dumps(seen)


def test_replying_twice_writes_one_answer(client, app_ctx):
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    first = answer(message["id"], ScriptedModel(says("one")))
    assert assistant.reply(uuid.UUID(message["id"]), backend=ScriptedModel(says("two"))) is None
    assert [m.id for m in replies(message["id"])] == [first.id]


def test_concurrent_replies_to_one_message_write_one_answer(app, live_client):
    _, headers = merchant(live_client)
    message = post(live_client, headers, conversation(live_client, headers)["id"])
    models = [ScriptedModel(says("first"), delay=0.5), ScriptedModel(says("second"), delay=0.5)]
    outcomes: list[Any] = []

    def run(model: ScriptedModel) -> None:
        with app.app_context():
            outcomes.append(assistant.reply(uuid.UUID(message["id"]), backend=model))
            db.session.remove()

    threads = [threading.Thread(target=run, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    with app.app_context():
        assert len(replies(message["id"])) == 1
    assert sorted(outcome is None for outcome in outcomes) == [False, True]
    assert sum(len(model.seen) for model in models) == 1  # the loser never asked the model


# --- Draft campaigns and tenant isolation ---------------------------------------------------------

def draft_call(**overrides: Any) -> ToolCall:
    arguments = {"name": "Win back", "description": "Abandoned checkouts", "proposedScheduleAt": "2030-05-02T09:00:00Z",
                 "channels": [{"channelType": "email", "config": EMAIL}],
                 "audience": {"name": "Abandoners", "definition": EVERYONE}} | overrides
    return call("create_draft_campaign", **arguments)


def test_create_draft_campaign_makes_a_draft_linked_to_the_conversation(client, app_ctx):
    user_id, headers = merchant(client)
    contacts(user_id, "a@example.com")
    chat = conversation(client, headers)
    message = post(client, headers, chat["id"], "Email everyone, tomorrow at 9am")
    reply = answer(message["id"], ScriptedModel(calls(draft_call()), says("I drafted it; review and schedule it.")))
    result = reply.meta["toolCalls"][0]["result"]
    assert result["status"] == "draft" and result["audience"]["size"] == 1

    campaign = client.get(f"/api/v1/campaigns/{result['campaignId']}", headers=headers).get_json()
    assert campaign["status"] == "draft" and campaign["scheduledAt"] is None and campaign["startedAt"] is None
    assert campaign["conversationId"] == chat["id"]
    assert campaign["config"] == {"proposedScheduleAt": "2030-05-02T09:00:00Z"}
    assert [(c["channelType"], c["config"]["subject"]) for c in campaign["channels"]] == [("email", EMAIL["subject"])]
    (audience,) = client.get(f"/api/v1/campaigns/{result['campaignId']}/audiences", headers=headers).get_json()
    assert audience["definition"] == EVERYONE and audience["lastSize"] == 1


@pytest.mark.parametrize("overrides, problem", [
    ({"channels": [{"channelType": "email", "config": {"subject": "no sender"}}]}, "channels"),
    ({"channels": [{"channelType": "sms", "config": {"body": "a"}}] * 2}, "channels"),
    ({"audience": {"name": "Bad", "definition": {"match": "some", "conditions": []}}}, "definition.match"),
    ({"scheduledAt": "2030-01-01T00:00:00Z"}, "scheduledAt"),
    ({"channels": []}, "channels"),
])
def test_an_invalid_draft_is_refused_with_reasons_and_writes_nothing(client, app_ctx, overrides, problem):
    _, headers = merchant(client)
    message = post(client, headers, conversation(client, headers)["id"])
    reply = answer(message["id"], ScriptedModel(calls(draft_call(**overrides)), says("That did not work.")))
    result = reply.meta["toolCalls"][0]["result"]
    assert "error" in result and problem in result["details"], result
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


def test_a_failed_reply_leaves_no_draft_behind_and_one_draft_per_message(client, app_ctx):
    _, headers = merchant(client)
    chat = conversation(client, headers)
    failing = post(client, headers, chat["id"])
    reply = answer(failing["id"], ScriptedModel(calls(draft_call()), BackendError("model went away")))
    assert reply.meta["error"] == "model went away"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0

    greedy = post(client, headers, chat["id"])
    reply = answer(greedy["id"], ScriptedModel(calls(draft_call(), draft_call(name="Again")), says("done")))
    assert "already created" in reply.meta["toolCalls"][1]["result"]["error"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 1


def test_tools_only_ever_reach_the_callers_data(client, app_ctx):
    user_id, headers = merchant(client)
    other_id, other_headers = merchant(client)
    contacts(user_id, "mine@example.com")
    contacts(other_id, "theirs1@example.com", "theirs2@example.com", "theirs3@example.com")
    mine, theirs = conversation(client, headers), conversation(client, other_headers)
    message = post(client, headers, mine["id"])
    foreign = {"userId": str(other_id), "conversationId": theirs["id"]}
    model = ScriptedModel(
        calls(call("preview_audience", definition=EVERYONE, **foreign), call("data_summary", **foreign),
              draft_call(**foreign)),
        says("done"),
    )
    preview, summary, draft = answer(message["id"], model).meta["toolCalls"]
    assert preview["result"]["count"] == 1 and preview["result"]["ignoredArguments"] == ["conversationId", "userId"]
    assert summary["result"]["contacts"]["total"] == 1
    campaign = db.session.get(Campaign, uuid.UUID(draft["result"]["campaignId"]))
    assert (campaign.user_id, str(campaign.conversation_id)) == (user_id, mine["id"])
    assert draft["result"]["audience"]["size"] == 1
    assert client.get("/api/v1/campaigns", headers=other_headers).get_json() == []
    # Even a caller passing a foreign conversation gets nothing linked to it.
    refused = run_tool(user_id, uuid.UUID(theirs["id"]), draft_call())
    assert refused == {"error": "The conversation is not one of yours."}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Audience)) == 1


# --- The sweep and the worker ---------------------------------------------------------------------

def test_the_sweep_requeues_only_unanswered_messages_of_live_conversations(client, app_ctx, monkeypatch):
    queued: list[tuple] = []
    monkeypatch.setattr(assistant, "enqueue_after_commit", lambda *args: queued.append(args))
    _, headers = merchant(client)
    chat, gone = conversation(client, headers), conversation(client, headers)
    lost, fresh, answered = (post(client, headers, chat["id"]) for _ in range(3))
    in_deleted = post(client, headers, gone["id"])
    answer(answered["id"], ScriptedModel(says("hi")))
    client.delete(f"{CONVERSATIONS}/{gone['id']}", headers=headers)
    stale = [uuid.UUID(m["id"]) for m in (lost, answered, in_deleted)]
    db.session.execute(sa.update(Message).where(Message.id.in_(stale)).values(created_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert assistant.reply_pending() == 1
    assert queued == [("assistant.reply", lost["id"])]
    assert fresh["id"] not in json.dumps(queued)


def test_a_real_worker_writes_the_reply(app, live_client, celery_worker, monkeypatch):
    model = ScriptedModel(calls(call("data_summary")), says("All quiet so far."))
    monkeypatch.setattr(assistant, "backend_for", lambda settings: model)
    _, headers = merchant(live_client)
    chat = conversation(live_client, headers)
    message = post(live_client, headers, chat["id"], "Anything new?")
    listed = _wait_for_reply(live_client, headers, chat["id"])
    assert [m["role"] for m in listed] == ["user", "assistant"]
    assert listed[1]["content"] == "All quiet so far." and listed[1]["metadata"]["replyTo"] == message["id"]


def test_the_built_in_assistant_answers_through_a_real_worker(app, live_client, celery_worker):
    pytest.importorskip("app.assistant.builtin")
    _, headers = merchant(live_client)
    chat = conversation(live_client, headers)
    post(live_client, headers, chat["id"], "Give me a summary of my data")
    reply = _wait_for_reply(live_client, headers, chat["id"])[-1]
    assert reply["role"] == "assistant" and "error" not in reply["metadata"], reply


def _wait_for_reply(client, headers, conversation_id: str, seconds: float = 15) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listed = client.get(f"{CONVERSATIONS}/{conversation_id}/messages", headers=headers).get_json()
        if any(m["role"] == "assistant" for m in listed):
            return listed
        time.sleep(0.1)
    raise AssertionError("no reply within seconds")


# --- Settings -----------------------------------------------------------------------------------

def test_llm_settings_are_read_and_the_key_kept_out_of_repr():
    settings = load_settings({**TEST_ENV, "LLM_BASE_URL": "https://llm.example/v1/", "LLM_API_KEY": "sk-secret",
                              "LLM_MODEL": "tiny", "LLM_TIMEOUT_SECONDS": "5"})
    assert (settings.llm_base_url, settings.llm_model, settings.llm_timeout_seconds) == (
        "https://llm.example/v1", "tiny", 5)
    assert settings.llm_api_key == "sk-secret" and "sk-secret" not in repr(settings)
    defaults = load_settings(TEST_ENV)
    assert (defaults.llm_base_url, defaults.llm_model, defaults.llm_timeout_seconds) == ("", "gpt-4o-mini", 30)
