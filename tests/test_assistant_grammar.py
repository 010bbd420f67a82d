"""The built-in assistant's grammar, phrasing by phrasing, as a merchant would say it.

Each campaign phrasing is checked for the exact channels and audience definition the draft gets (or
the refusal, which must say what was not understood), each flow phrasing for the exact flow
definition; everything produced must pass the validation the API applies. The audience rows run
against real rows too, so "bought before but not in the last 90 days" is checked for who it finds.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.assistant.builtin import BuiltinAssistant
from app.assistant.builtin_copy import channel_config, copy_for
from app.assistant.builtin_grammar import DraftRequest, NotUnderstood, flow_definition, parse
from app.assistant.tools import TOOLS, DraftCampaignArguments
from app.channels.configs import load_channel_config
from app.services.audience_sql import validate_definition

NOW = datetime(2025, 3, 5, 14, 30, tzinfo=UTC)  # a Wednesday afternoon
builtin = BuiltinAssistant(now=lambda: NOW)


def ask(message: str, tool_result: dict[str, Any] | None = None) -> Any:
    """The built-in's tool call for the message, or with `tool_result` its answer once the tool ran."""
    first = builtin.complete([{"role": "user", "content": message}], TOOLS)
    if tool_result is None:
        return first
    [call] = first.tool_calls
    chat = [{"role": "user", "content": message},
            {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {
                "name": call.name, "arguments": json.dumps(call.arguments)}}]},
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps(tool_result)}]
    return builtin.complete(chat, TOOLS).content


def consent(channel: str) -> dict[str, Any]:
    return {"type": "consent", "channel": channel}


def event(name: str, within: int | None = None, hours: int | None = None, **extra: Any) -> dict[str, Any]:
    window = {"withinDays": within} if within else {"withinHours": hours} if hours else {}
    return {"type": "event", "event": name, **window, **extra}


def country(*codes: str) -> dict[str, Any]:
    many = len(codes) > 1
    return {"type": "attribute", "field": "country", "op": "in" if many else "eq",
            "value": list(codes) if many else codes[0]}


def outside(*codes: str) -> list[dict[str, Any]]:
    return [{"type": "attribute", "field": "country", "op": "exists"},
            *({"type": "attribute", "field": "country", "op": "neq", "value": code} for code in codes)]


def bought_before_but_not(days: int, name: str = "order_placed") -> list[dict[str, Any]]:
    return [event(name), event(name, days, negate=True)]


NO_ORDER = {"negate": True}
# phrasing, channels, conditions (consent last, as drafted)
CAMPAIGNS: list[tuple[str, list[str], list[dict[str, Any]]]] = [
    # Win-back
    ("email people who haven't ordered in 90 days", ["email"], [*bought_before_but_not(90), consent("email")]),
    ("email lapsed customers", ["email"], [*bought_before_but_not(90), consent("email")]),
    ("text lapsed customers who haven't bought in 6 months", ["sms"], [*bought_before_but_not(180), consent("sms")]),
    ("email customers who bought before but not in the last 60 days", ["email"],
     [*bought_before_but_not(60), consent("email")]),
    ("email past customers who haven't ordered in 3 months", ["email"],
     [*bought_before_but_not(90), consent("email")]),
    ("send a win-back email to everyone", ["email"], [*bought_before_but_not(90), consent("email")]),
    ("win back customers who haven't purchased for 120 days", ["email"],
     [*bought_before_but_not(120), consent("email")]),
    ("email everyone who hasn't visited in 30 days", ["email"],
     [*bought_before_but_not(30, "page_viewed"), consent("email")]),
    ("email customers who bought at least 3 times but not in the last 90 days", ["email"],
     [event("order_placed", minCount=3), event("order_placed", 90, negate=True), consent("email")]),
    # Carts and checkouts
    ("text people who left items in their cart", ["sms"],
     [event("added_to_cart"), event("order_placed", **NO_ORDER), consent("sms")]),
    ("Please send a quick reminder email to shoppers who left something in their basket", ["email"],
     [event("added_to_cart"), event("order_placed", **NO_ORDER), consent("email")]),
    ("push shoppers who started checkout but didn't complete their purchase", ["push"],
     [event("checkout_started"), event("order_placed", **NO_ORDER), consent("push")]),
    ("email everyone who didn't finish checking out this week", ["email"],
     [event("checkout_started", 7), event("order_placed", 7, negate=True), consent("email")]),
    ("remind people who abandoned their cart by text", ["sms"],
     [event("added_to_cart"), event("order_placed", **NO_ORDER), consent("sms")]),
    ("email everyone who viewed a product but didn't add to cart this week", ["email"],
     [event("product_viewed", 7), event("added_to_cart", 7, negate=True), consent("email")]),
    ("email people who added to cart without checking out yesterday", ["email"],
     [event("added_to_cart", 2), event("order_placed", 2, negate=True), consent("email")]),
    # Windows in hours
    ("email everyone who abandoned checkout in the last 24 hours", ["email"],
     [event("checkout_started", 1), event("order_placed", 1, negate=True), consent("email")]),
    ("email everyone who abandoned checkout in the last 6 hours", ["email"],
     [event("checkout_started", hours=6), event("order_placed", hours=6, negate=True), consent("email")]),
    ("email everyone who viewed products in the past 48h", ["email"], [event("product_viewed", 2), consent("email")]),
    ("push everyone who signed up in the last hour", ["push"], [event("customer_created", hours=1), consent("push")]),
    # Countries by name, adjective, people, lists and exclusions
    ("email German customers", ["email"], [country("DE"), consent("email")]),
    ("email customers in Germany, Austria and Switzerland", ["email"], [country("DE", "AT", "CH"), consent("email")]),
    ("text Brazilians who bought this month", ["sms"], [country("BR"), event("order_placed", 30), consent("sms")]),
    ("email Dutch and Belgian customers", ["email"], [country("NL", "BE"), consent("email")]),
    ("email customers in Côte d'Ivoire", ["email"], [country("CI"), consent("email")]),
    ("whatsapp customers in Türkiye", ["whatsapp"], [country("TR"), consent("whatsapp")]),
    ("email South Korean customers", ["email"], [country("KR"), consent("email")]),
    ("email customers from the Netherlands who bought from us", ["email"],
     [country("NL"), event("order_placed"), consent("email")]),
    ("sms New Zealanders and Australians", ["sms"], [country("NZ", "AU"), consent("sms")]),
    ("email customers in St. Lucia", ["email"], [country("LC"), consent("email")]),
    ("email customers in the UAE", ["email"], [country("AE"), consent("email")]),
    ("email customers outside the US", ["email"], [*outside("US"), consent("email")]),
    ("email customers except those in the UK and Ireland", ["email"], [*outside("GB", "IE"), consent("email")]),
    # Counts, one-time buyers, order values
    ("email customers who bought more than 3 times", ["email"], [event("order_placed", minCount=4), consent("email")]),
    ("email one-time buyers", ["email"],
     [event("order_placed"), event("order_placed", minCount=2, negate=True), consent("email")]),
    ("email returning customers in France", ["email"],
     [country("FR"), event("order_placed", minCount=2), consent("email")]),
    ("email customers who placed an order over $100 this month", ["email"],
     [event("order_placed", 30, where={"value": {"gt": 100}}), consent("email")]),
    ("text customers who bought something under €20", ["sms"],
     [event("order_placed", where={"value": {"lt": 20}, "currency": "EUR"}), consent("sms")]),
    # Leads and channels said other ways
    ("send an email blast to all subscribers", ["email"], [consent("email")]),
    ("send our newsletter to everyone on the mailing list", ["email"], [consent("email")]),
    ("thank everyone who bought this week", ["email"], [event("order_placed", 7), consent("email")]),
    ("text non-buyers", ["sms"], [event("order_placed", **NO_ORDER), consent("sms")]),
    ("email people who visited but didn't buy this week", ["email"],
     [event("page_viewed", 7), event("order_placed", 7, negate=True), consent("email")]),
]


@pytest.mark.parametrize(("message", "channel_types", "conditions"), CAMPAIGNS)
def test_campaign_phrasings_draft_exactly_this_audience(message, channel_types, conditions):
    [call] = ask(message).tool_calls

    assert call.name == "create_draft_campaign"
    arguments = call.arguments
    assert arguments["audience"]["definition"] == {"match": "all", "conditions": conditions}
    assert [channel["channelType"] for channel in arguments["channels"]] == channel_types
    validate_definition(arguments["audience"]["definition"])
    for channel in arguments["channels"]:
        load_channel_config(channel["channelType"], channel["config"])
    DraftCampaignArguments(exclude=("config", "conversation_id")).load(arguments)


@pytest.mark.parametrize(("message", "name"), [
    ("email people who haven't ordered in 90 days", "Everyone who bought before but not in the last 90 days"),
    ("email everyone who abandoned checkout in the last 6 hours", "Everyone who abandoned checkout in the last 6 hours"),
    ("email customers in Germany, Austria and Switzerland", "DE, AT and CH contacts"),
    ("email customers outside the US", "Contacts outside US"),
    ("push shoppers who started checkout but didn't complete their purchase",
     "Everyone who started checkout and didn't buy"),
])
def test_the_audience_is_named_as_understood(message, name):
    [call] = ask(message).tool_calls
    assert call.arguments["audience"]["name"] == name


def test_a_message_introduced_by_saying_is_used_verbatim():
    [call] = ask('text everyone who bought saying "Thanks for your order! Here is 10% off: THANKS10"').tool_calls
    assert call.arguments["channels"] == [{"channelType": "sms",
                                           "config": {"body": "Thanks for your order! Here is 10% off: THANKS10"}}]

    [call] = ask('email lapsed customers with the message: “We miss you, come back for 15% off”').tool_calls
    assert call.arguments["channels"][0]["config"]["text"] == "We miss you, come back for 15% off"
    assert call.arguments["channels"][0]["config"]["subject"] == "We miss you"


REFUSALS = [
    ("email customers in Congo", "“congo” could mean the Republic of the Congo or DR Congo."),
    ("email Korean customers", "“korean” could mean South Korea or North Korea."),
    ("email customers in Georgia", "the country Georgia or the US state"),
    ("email Scottish customers", "“scottish” is part of the United Kingdom"),
    ("email Dominican customers", "could mean Dominica or Dominican Republic"),
    ("email customers in New Mexico", "I didn't understand “new mexico”."),
    ("email customers in Narnia", "I didn't understand “narnia”."),
    ("email VIP customers", "I didn't understand “vip”."),
    ("email customers who spent over $100", "I didn't understand “spent over 100”."),
    ("email customers who opened our last email", "I didn't understand “opened last email”."),
    ("email customers who haven't ordered since March", "I didn't understand “since march”."),
    ("email everyone who bought in the last 30 minutes", "I didn't understand “last 30 minutes”."),
    ("email people who bought but didn't buy", "nobody can both have done something and not have done it"),
    ("how many orders in the last 6 hours?", "I count in whole days"),
    ('text everyone "one" and "two"', "give the message in one pair of quotes."),
]


@pytest.mark.parametrize(("message", "reason"), REFUSALS)
def test_what_cannot_be_mapped_exactly_is_refused_saying_why(message, reason):
    request = parse(message, NOW)
    assert isinstance(request, NotUnderstood) and reason in (request.reason or "")

    completion = ask(message)
    assert completion.tool_calls == [] and reason in completion.content


def test_every_country_is_known_by_name_and_adjective():
    import pycountry

    def code_of(words: str, form: str = "email {} customers") -> str | None:
        request = parse(form.format(words), NOW)
        if not isinstance(request, DraftRequest):
            return None
        [condition, _] = request.audience.definition(("email",))["conditions"]
        return condition["value"]

    # ISO 3166-1 names (the few shared by several countries or places are refused, as above)
    unknown = [country.name for country in pycountry.countries
               if code_of(country.name, "email customers in {}") != country.alpha_2
               and country.alpha_2 not in {"CG", "GE"}]  # "Congo", "Georgia"
    assert unknown == []
    adjectives = {"Peruvian": "PE", "Vietnamese": "VN", "Kenyan": "KE", "Icelandic": "IS", "Filipino": "PH",
                  "Emirati": "AE", "Saudi": "SA", "Argentine": "AR", "French": "FR", "Indian": "IN", "American": "US"}
    assert {word: code_of(word) for word in adjectives} == adjectives


# --- Flows --------------------------------------------------------------------------------------

def step(delay: int, channel: str, theme: str, message: str | None = None) -> dict[str, Any]:
    return {"delaySeconds": delay, "channelType": channel,
            "config": channel_config(channel, copy_for(theme, message=message))}


def flow(name: str, trigger: str, steps: list[dict[str, Any]], mode: str = "once", exits: tuple[str, ...] = (),
         **extra: Any) -> dict[str, Any]:
    days = extra.pop("days", None)
    where = extra.pop("where", None)
    return {"name": name, "trigger": {"event": trigger, **({"where": where} if where else {})}, **extra,
            "exitWhen": [{"event": exit_event} for exit_event in exits],
            "reentry": {"mode": mode, **({"days": days} if days else {})}, "steps": steps}


CHECKOUT = ("Abandoned checkout reminder", "checkout_started")
CART = ("Abandoned cart reminder", "added_to_cart")
ORDER = ("order_placed",)
HOUR, DAY = 3600, 86400
FLOWS: list[tuple[str, dict[str, Any]]] = [
    ("remind people who abandoned checkout after 1 hour",
     flow(*CHECKOUT, [step(HOUR, "email", "abandoned")], exits=ORDER)),
    ("thank customers after every order",
     flow("Post-purchase thank-you", "order_placed", [step(0, "email", "thanks")], mode="always")),
    ("thank customers 3 days after every order",
     flow("Post-purchase thank-you", "order_placed", [step(3 * DAY, "email", "thanks")], mode="always")),
    ("welcome new subscribers", flow("Welcome", "customer_created", [step(0, "email", "welcome")])),
    ("welcome new customers with an email, then after 2 days send an SMS",
     flow("Welcome", "customer_created", [step(0, "email", "welcome"), step(2 * DAY, "sms", "welcome")])),
    ("remind people who abandoned checkout after 1 hour, then after 2 days send an SMS",
     flow(*CHECKOUT, [step(HOUR, "email", "abandoned"), step(2 * DAY, "sms", "abandoned")], exits=ORDER)),
    ("email people who abandoned checkout after 1 hour and text them after 1 day",  # both counted from the event
     flow(*CHECKOUT, [step(HOUR, "email", "abandoned"), step(DAY - HOUR, "sms", "abandoned")], exits=ORDER)),
    ("email people who left items in their cart after 1 hour and text them a day later",
     flow(*CART, [step(HOUR, "email", "abandoned"), step(DAY, "sms", "abandoned")], exits=ORDER)),
    ("remind people who abandoned their cart after 30 minutes, then 1 day later by text, then after 3 days push",
     flow(*CART, [step(1800, "email", "abandoned"), step(DAY, "sms", "abandoned"), step(3 * DAY, "push", "abandoned")],
          exits=ORDER)),
    ("send a whatsapp 3 hours after someone abandons their cart",
     flow(*CART, [step(3 * HOUR, "whatsapp", "abandoned")], exits=ORDER)),
    ("send an email and an SMS after 30 minutes when someone abandons checkout",
     flow(*CHECKOUT, [step(1800, "email", "abandoned"), step(0, "sms", "abandoned")], exits=ORDER)),
    ("whenever someone abandons checkout, text them after 2 hours",
     flow(*CHECKOUT, [step(2 * HOUR, "sms", "abandoned")], mode="always", exits=ORDER)),
    ("remind US customers who abandoned checkout after 1 hour, at most once every 30 days",
     flow("Abandoned checkout reminder (US)", "checkout_started", [step(HOUR, "email", "abandoned")],
          mode="afterDays", days=30, exits=ORDER, filter={"match": "all", "conditions": [country("US")]})),
    ("text customers 2 days after every order over $100",
     flow("Post-purchase thank-you", "order_placed", [step(2 * DAY, "sms", "thanks")], mode="always",
          where={"value": {"gt": 100}})),
    ("when someone views a product but doesn't buy, email them after 4 hours",
     flow("Browse follow-up", "product_viewed", [step(4 * HOUR, "email", "browsed")], exits=ORDER)),
    ("when someone signs up, email them immediately and text them the next day",
     flow("Welcome", "customer_created", [step(0, "email", "welcome"), step(DAY, "sms", "welcome")])),
    ("set up an abandoned checkout flow", flow(*CHECKOUT, [step(0, "email", "abandoned")], exits=ORDER)),
    ('thank customers after every order saying "Thanks, {{ contact.firstName }}!"',
     flow("Post-purchase thank-you", "order_placed", [step(0, "email", "thanks", "Thanks, {{ contact.firstName }}!")],
          mode="always")),
    ('welcome new subscribers with "Welcome aboard!", then after 2 days "Here is 10% off: WELCOME10" by text',
     flow("Welcome", "customer_created", [step(0, "email", "welcome", "Welcome aboard!"),
                                          step(2 * DAY, "sms", "welcome", "Here is 10% off: WELCOME10")])),
    ("remind German customers who started checkout but didn't complete their purchase after 2 hours",
     flow("Abandoned checkout reminder (DE)", "checkout_started", [step(2 * HOUR, "email", "abandoned")], exits=ORDER,
          filter={"match": "all", "conditions": [country("DE")]})),
]


@pytest.mark.parametrize(("message", "expected"), FLOWS)
def test_flow_phrasings_give_exactly_this_flow(message, expected):
    definition = flow_definition(message)
    assert definition == expected
    # The parts of it that Herald's existing rules already check.
    assert not isinstance(definition, NotUnderstood)
    if "filter" in definition:
        validate_definition(definition["filter"])
    if "where" in definition["trigger"]:
        validate_definition({"match": "all", "conditions": [
            {"type": "event", "event": definition["trigger"]["event"], "where": definition["trigger"]["where"]}]})
    for each in definition["steps"]:
        load_channel_config(each["channelType"], each["config"])


def test_the_documented_abandoned_checkout_flow_in_full():
    assert flow_definition("remind people who abandoned checkout after 1 hour") == {
        "name": "Abandoned checkout reminder",
        "trigger": {"event": "checkout_started"},
        "exitWhen": [{"event": "order_placed"}],
        "reentry": {"mode": "once"},
        "steps": [{"delaySeconds": 3600, "channelType": "email", "config": {
            "fromEmail": "hello@example.com", "fromName": "Your store", "subject": "You left something behind",
            "html": "<p>Hi {{ contact.firstName or 'there' }}, your cart is still waiting. Come back and finish your "
                    "order!</p>",
            "text": "Hi {{ contact.firstName or 'there' }}, your cart is still waiting. Come back and finish your "
                    "order!"}}],
    }


FLOW_REFUSALS = [
    ("after 2 days send an SMS", "what should start the flow?"),
    ("remind people who abandoned checkout in the last 7 days after 1 hour", "takes no time window"),
    ("remind people who abandoned checkout after 1 hour, at 9am", "not at a date or time of day"),
    ("email people who abandoned checkout after 1 day and text them after 1 hour",
     "each step's delay must come after the one before it"),
    ("remind lapsed customers after 1 day", "Ask for a campaign to reach lapsed customers."),
    ("thank repeat customers after every order", "it can't count them"),
    ("when someone buys and views a product, email them", "a flow starts on one kind of event"),
    ("thank customers after their first order", "I didn't understand “first”."),
    ("remind people who abandoned checkout after 2 years", "within 365 days"),
    ('welcome new subscribers with "Hi", "Hello" and "Hey"', "one quoted message for each step"),
    ("remind Congolese customers who abandoned checkout after 1 hour", "“congolese” could mean"),
]


@pytest.mark.parametrize(("message", "reason"), FLOW_REFUSALS)
def test_flows_that_cannot_be_mapped_exactly_are_refused(message, reason):
    refused = flow_definition(message)
    assert isinstance(refused, NotUnderstood) and reason in (refused.reason or "")


def test_a_flow_request_becomes_one_draft_flow_call_and_nothing_is_activated():
    message = "remind people who abandoned checkout after 1 hour, then after 2 days send an SMS"
    [call] = ask(message).tool_calls
    assert (call.name, call.arguments) == ("draft_flow", flow_definition(message))
    assert "draft_flow" in {tool["function"]["name"] for tool in TOOLS}

    answer = ask(message, {"flowId": str(uuid.uuid4()), "name": "Abandoned checkout reminder", "status": "draft"})
    assert answer.startswith("I drafted the flow “Abandoned checkout reminder”: when someone starts a checkout, it "
                             "sends an email 1 hour after the event, then an SMS 2 days after the step before, "
                             "unless they place an order first (at most once per contact).")
    assert "nothing is sent until you review it and activate it" in answer

    refused = ask(message, {"error": "The flow is not valid.", "details": {"steps[0].delaySeconds": ["Too long."]}})
    assert refused.startswith("I couldn't do that: The flow is not valid.")


def test_campaign_and_flow_readings_stay_apart():
    # A time window or a send time makes it a campaign to people who already did it.
    for message in ("welcome everyone who signed up this week", "email everyone who abandoned checkout today"):
        [call] = ask(message).tool_calls
        assert call.name == "create_draft_campaign"
    # A delay after the event, "every order", "when someone ..." or "welcome new ..." make it a flow.
    for message in ("welcome new subscribers", "email them 2 hours after someone abandons checkout",
                    "thank customers after every order", "when someone signs up, send a text"):
        [call] = ask(message).tool_calls
        assert call.name == "draft_flow"


# --- Against real rows --------------------------------------------------------------------------

def test_a_win_back_audience_finds_those_who_bought_before_but_not_lately(app, db_session):
    from app.extensions import db
    from app.models import Contact, ContactActivity, User, utcnow
    from app.services import audiences

    user = User(email="grammar-winback@example.com", password_hash="x", is_verified=True)
    db.session.add(user)
    db.session.flush()

    def shopper(email: str, *orders_days_ago: int, country_code: str = "DE") -> None:
        contact = Contact(user_id=user.id, email=email, attributes={"country": country_code}, external_ids={},
                          consent={"email": "subscribed"}, consent_sources={})
        db.session.add(contact)
        db.session.flush()
        db.session.add_all(ContactActivity(user_id=user.id, contact_id=contact.id, event_type="order_placed",
                                           original_name="order_placed", properties={"value": 50.0},
                                           occurred_at=utcnow() - timedelta(days=days)) for days in orders_days_ago)

    shopper("lapsed@example.com", 200, 120)
    shopper("recent@example.com", 200, 10)
    shopper("never@example.com")
    shopper("lapsed-fr@example.com", 150, country_code="FR")
    db.session.flush()

    def matching(message: str) -> set[str]:
        request = parse(message, NOW)
        assert isinstance(request, DraftRequest)
        preview = audiences.preview(user.id, request.audience.definition(request.channels), 10)
        assert preview["count"] == len(preview["sample"])
        return {contact["email"] for contact in preview["sample"]}

    assert matching("email people who haven't ordered in 90 days") == {"lapsed@example.com",
                                                                        "lapsed-fr@example.com"}
    assert matching("email German lapsed customers") == {"lapsed@example.com"}
    assert matching("email customers outside Germany who bought before but not in the last 100 days") == {
        "lapsed-fr@example.com"}
    assert matching("email everyone who didn't buy") == {"never@example.com"}
