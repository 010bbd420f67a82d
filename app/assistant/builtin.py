"""The built-in assistant: a deterministic `Backend` for when no model endpoint is configured.

It answers exactly as a model would, so the conversation loop drives it unchanged: the merchant's
last message is parsed (`builtin_grammar`); a request that needs data becomes one tool call, and once
the loop has appended that tool's result, the result becomes the answer. Anything it does not
understand gets a reply listing what it can do. Like any backend it only proposes: the tools that
write create a draft campaign or a draft flow, a send time is only ever a proposal, and a flow is
never activated.

Same messages and same `now` give the same completion, tool-call ids included.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.assistant.backend import Completion, ToolCall
from app.assistant.builtin_copy import (
    PLACEHOLDER_SENDER,
    WHATSAPP_TEMPLATE,
    channel_config,
    copy_for,
)
from app.assistant.builtin_grammar import (
    CountRequest,
    DraftRequest,
    FlowRequest,
    NotUnderstood,
    PreviewRequest,
    Request,
    parse,
    period,
)
from app.schemas.campaigns import NAME_MAX

MODEL = "herald-builtin"
_NOUNS = {  # event type: singular, plural as counted in answers
    "order_placed": ("order", "orders"), "checkout_started": ("checkout started", "checkouts started"),
    "product_viewed": ("product view", "product views"), "page_viewed": ("page view", "page views"),
    "added_to_cart": ("add to cart", "adds to cart"), "lead": ("lead", "leads"),
    "customer_created": ("new customer", "new customers"), "events": ("event received", "events received"),
}
_TRIGGERS = {  # event type: how a flow's start is told
    "order_placed": "someone places an order", "checkout_started": "someone starts a checkout",
    "added_to_cart": "someone adds to their cart", "customer_created": "a new customer signs up",
    "product_viewed": "someone views a product", "page_viewed": "someone visits the store", "lead": "a lead comes in",
    "customer_updated": "a customer is updated", "custom": "a custom event comes in",
}
_EXITS = {"order_placed": "they place an order", "checkout_started": "they start a checkout",
          "added_to_cart": "they add to their cart", "product_viewed": "they view a product",
          "page_viewed": "they visit the store", "customer_created": "they sign up", "lead": "they become a lead"}
_REENTRY = {"once": "at most once per contact", "always": "every time",
            "afterDays": "again at most every {days} days"}
HELP = (
    "I'm Herald's built-in assistant (no AI model is connected), so I understand a few kinds of request:\n"
    "- drafting a campaign: “email everyone who abandoned checkout in the last 7 days, tomorrow at 9am”, "
    "“text US customers who bought in the last 30 days”, "
    "“push everyone who viewed a product but didn't buy this week”\n"
    "- counting: “how many orders this week?”, “how many customers do I have?”\n"
    "- sizing an audience: “preview everyone who bought at least 2 times”, "
    "“how many people would get an email to everyone who abandoned checkout this week?”\n"
    "- drafting a triggered flow: “remind people who abandoned checkout after 1 hour”, "
    "“thank customers after every order”, “welcome new subscribers, then after 2 days send an SMS”\n"
    "I never send, schedule or activate anything myself: I draft campaigns and flows for you to review, then "
    "you schedule or launch a campaign, or activate a flow."
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BuiltinAssistant:
    """A `Backend` that needs no model; `now` is injectable so tests can pin relative dates."""

    def __init__(self, now: Callable[[], datetime] = _utc_now) -> None:
        self._now = now

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        now = self._now()
        request = parse(_last_user_text(messages), now)
        results = _tool_results(messages)
        if results:
            return _say(_answer(request, results))
        call = _tool_call(request, now)
        if call is None:
            reason = request.reason if isinstance(request, NotUnderstood) else None
            return _say(HELP if reason is None else f"Sorry, {reason}\n\n{HELP}")
        if call.name not in {tool.get("function", {}).get("name") for tool in tools}:
            return _say("I can't look that up right now. Please ask again in a moment.")
        return Completion(content=None, tool_calls=[call], model=MODEL)


def _say(content: str) -> Completion:
    return Completion(content=content, tool_calls=[], model=MODEL)


# --- Reading the chat ---------------------------------------------------------------------------

def _text_of(content: Any) -> str:
    """A message's text, whether a string or OpenAI content parts."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, parsed result) of the tool messages after the last user message, in order."""
    since_user: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") == "user":
            break
        since_user.insert(0, message)
    names = {call.get("id"): call.get("function", {}).get("name")
             for message in since_user if message.get("role") == "assistant"
             for call in message.get("tool_calls") or []}
    return [(names.get(message.get("tool_call_id"), ""), _json_object(message.get("content")))
            for message in since_user if message.get("role") == "tool"]


def _json_object(content: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(_text_of(content))
    except ValueError:  # the loop truncates long results, which then no longer parse
        return {"error": "The result could not be read."}
    return parsed if isinstance(parsed, dict) else {"error": "The result could not be read."}


# --- Requests to tool calls ---------------------------------------------------------------------

def _tool_call(request: Request, now: datetime) -> ToolCall | None:
    if isinstance(request, DraftRequest):
        return _call("create_draft_campaign", _draft_arguments(request, now))
    if isinstance(request, FlowRequest):
        return _call("draft_flow", request.definition)
    if isinstance(request, CountRequest):
        return _call("data_summary", {"windowDays": request.window_days})
    if isinstance(request, PreviewRequest):
        return _call("preview_audience", {"definition": request.audience.definition(request.channels)})
    return None


def _call(name: str, arguments: dict[str, Any]) -> ToolCall:
    # Derived from the call itself, so the same request always gets the same id.
    digest = hashlib.sha256(json.dumps([name, arguments], sort_keys=True).encode()).hexdigest()
    return ToolCall(id=f"call_{digest[:24]}", name=name, arguments=arguments)


def _draft_arguments(request: DraftRequest, now: datetime) -> dict[str, Any]:
    audience = request.audience
    copy = copy_for(audience.theme, request.topic, request.message)
    arguments: dict[str, Any] = {
        "name": f"{audience.name} ({', '.join(request.channels)})"[:NAME_MAX],
        "description": "Drafted by Herald's built-in assistant. Review the sender, the copy and the audience "
                       "before scheduling or launching it.",
        "channels": [{"channelType": channel, "config": channel_config(channel, copy)}
                     for channel in request.channels],
        "audience": {"name": audience.name[:NAME_MAX], "definition": audience.definition(request.channels)},
    }
    if request.send_at is not None and request.send_at > now:
        arguments["proposedScheduleAt"] = _iso(request.send_at)
    return arguments


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Tool results to answers --------------------------------------------------------------------

def _answer(request: Request, results: list[tuple[str, dict[str, Any]]]) -> str:
    name, result = results[-1]
    if "error" in result:
        details = f" ({json.dumps(result['details'])[:300]})" if result.get("details") else ""
        return f"I couldn't do that: {result['error']}{details}"
    if name == "create_draft_campaign":
        return _drafted(request, result)
    if name == "draft_flow" and isinstance(request, FlowRequest):
        return _drafted_flow(request, result)
    if name == "data_summary" and isinstance(request, CountRequest):
        return _counted(request, result)
    if name == "preview_audience":
        return _previewed(result)
    return HELP


def _drafted(request: Request, result: dict[str, Any]) -> str:
    channels = [channel["channelType"] for channel in result.get("channels", [])]
    size = result.get("audience", {}).get("size", 0)
    drafted = f"I drafted the campaign “{result.get('name')}” ({', '.join(channels)});"
    lines = [f"{drafted} {_plural(size, 'contact matches', 'contacts match')} its audience right now.",
             "It is only a draft: nothing is sent until you review it and schedule or launch it."]
    if proposed := result.get("proposedScheduleAt"):
        moment = datetime.fromisoformat(proposed)
        lines.append(f"I proposed sending it on {moment:%A %d %B %Y at %H:%M} UTC; "
                     "schedule it for then if that suits you.")
    elif isinstance(request, DraftRequest) and request.send_at is not None:
        lines.append("The send time you asked for has already passed, so I didn't propose one.")
    if "email" in channels:
        lines.append(f"Before sending, replace the placeholder sender {PLACEHOLDER_SENDER} with your own address.")
    if "whatsapp" in channels:
        lines.append(f"WhatsApp only sends approved templates: I used Meta's sample “{WHATSAPP_TEMPLATE}”; "
                     "switch it to one of yours.")
    return " ".join(lines)


def _drafted_flow(request: FlowRequest, result: dict[str, Any]) -> str:
    flow = request.definition
    steps = flow["steps"]
    told = []
    for index, step in enumerate(steps):
        delay = _duration(step["delaySeconds"])
        when = (("right away" if not index else "at the same time") if not delay
                else f"{delay} after {'the event' if not index else 'the step before'}")
        told.append(f"{'an' if step['channelType'] in ('email', 'sms') else 'a'} "
                    f"{_CHANNEL_NAMES[step['channelType']]} {when}")
    exits = [_EXITS.get(exit_["event"], exit_["event"]) for exit_ in flow["exitWhen"]]
    reentry = _REENTRY[flow["reentry"]["mode"]].format(days=flow["reentry"].get("days"))
    unless = f", unless {' or '.join(exits)} first" if exits else ""
    lines = [f"I drafted the flow “{result.get('name', flow['name'])}”: when {_TRIGGERS[flow['trigger']['event']]}, "
             f"it sends {', then '.join(told)}{unless} ({reentry}).",
             "It is only a draft: nothing is sent until you review it and activate it."]
    if any(step["channelType"] == "email" for step in steps):
        lines.append(f"Before activating it, replace the placeholder sender {PLACEHOLDER_SENDER} with your own address.")
    if any(step["channelType"] == "whatsapp" for step in steps):
        lines.append(f"WhatsApp only sends approved templates: I used Meta's sample “{WHATSAPP_TEMPLATE}”; "
                     "switch it to one of yours.")
    return " ".join(lines)


_CHANNEL_NAMES = {"email": "email", "sms": "SMS", "push": "push notification", "whatsapp": "WhatsApp message"}


def _duration(seconds: int) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            return _plural(seconds // size, f"{unit}", f"{unit}s")
    return _plural(seconds, "second", "seconds") if seconds else ""


def _counted(request: CountRequest, result: dict[str, Any]) -> str:
    days = result.get("windowDays", request.window_days)
    events = result.get("events", {})
    by_type = events.get("byType", {})
    if request.metric == "contacts":
        total = result.get("contacts", {}).get("total", 0)
        new = by_type.get("customer_created", 0)
        return (f"You have {_plural(total, 'contact', 'contacts')}; "
                f"{_plural(new, 'new customer', 'new customers')} signed up {period(days)}.")
    count = events.get("rawEvents", 0) if request.metric == "events" else by_type.get(request.metric, 0)
    return f"You had {_plural(count, *_NOUNS[request.metric])} {period(days)}."


def _previewed(result: dict[str, Any]) -> str:
    count = result.get("count", 0)
    examples = [contact.get("email") or contact.get("phone") for contact in result.get("sample", [])[:3]]
    example = f" (for example {', '.join(filter(None, examples))})" if any(examples) else ""
    return (f"{_plural(count, 'contact matches', 'contacts match')} that audience right now{example}. "
            "Ask me to email or text them and I'll draft a campaign.")


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"
