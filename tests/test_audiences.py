"""Audiences through HTTP: the definition language (every condition and operator), previews,
tenant isolation, validation paths, the one-query compiler, and the campaign sub-resource."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from app.extensions import db
from app.models import (
    Audience,
    Campaign,
    Contact,
    ContactActivity,
    PushSubscription,
    utcnow,
)
from app.services import audiences
from app.services.audience_sql import compile_definition
from tests.support.accounts import signed_in

PREVIEW = "/api/v1/audiences/preview"


# --- Helpers ------------------------------------------------------------------------------------

def merchant(client) -> tuple[uuid.UUID, dict[str, str]]:
    tokens, headers = signed_in(client)
    return uuid.UUID(tokens["user"]["id"]), headers


def contact(user_id: uuid.UUID, email: str | None = None, **fields) -> Contact:
    row = Contact(user_id=user_id, email=email, **fields)
    db.session.add(row)
    db.session.commit()
    return row


def activity(person: Contact, event_type: str, days_ago: float = 0, user_id: uuid.UUID | None = None,
             original_name: str | None = None, **properties) -> None:
    db.session.add(ContactActivity(
        user_id=user_id or person.user_id, contact_id=person.id, event_type=event_type,
        original_name=original_name or event_type, occurred_at=utcnow() - timedelta(days=days_ago),
        properties=properties,
    ))
    db.session.commit()


def campaign(user_id: uuid.UUID, status: str = "draft") -> Campaign:
    row = Campaign(user_id=user_id, name="Spring sale", status=status, config={})
    db.session.add(row)
    db.session.commit()
    return row


def preview(client, headers, definition: dict, **extra) -> dict:
    response = client.post(PREVIEW, headers=headers, json={"definition": definition, "sampleSize": 100} | extra)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def matched(client, headers, *conditions: dict, match: str = "all") -> set[str]:
    """Emails (or phones) of the contacts a definition matches; the count must agree with them."""
    body = preview(client, headers, {"match": match, "conditions": list(conditions)})
    found = {item["email"] or item["phone"] for item in body["sample"]}
    assert body["count"] == len(found)
    return found


def mismatches(client, headers, cases: list[tuple[dict, set[str]]]) -> list[tuple[dict, set[str], set[str]]]:
    """(condition, expected, found) for every case whose audience is not what was expected.

    Names without "@" or "+" are short for name@example.com."""
    failures = []
    for condition, expected in cases:
        wanted = {name if "@" in name or "+" in name else f"{name}@example.com" for name in expected}
        found = matched(client, headers, condition)
        if found != wanted:
            failures.append((condition, wanted, found))
    return failures


def event(event_type: str, /, **fields) -> dict:
    return {"type": "event", "event": event_type, **fields}


def attribute(field: str, op: str, *value) -> dict:
    return {"type": "attribute", "field": field, "op": op, **({"value": value[0]} if value else {})}


def consent(channel: str, **fields) -> dict:
    return {"type": "consent", "channel": channel, **fields}


def group(match: str, *conditions: dict) -> dict:
    return {"type": "group", "match": match, "conditions": list(conditions)}


# --- Everyone, and tenant isolation -------------------------------------------------------------

def test_empty_definition_is_every_contact_of_the_merchant_only(client, app_ctx):
    user_id, headers = merchant(client)
    other_id, other_headers = merchant(client)
    for email in ("ada@example.com", "bob@example.com"):
        contact(user_id, email)
        contact(other_id, email, attributes={"country": "US"})
    contact(other_id, "eve@example.com")

    for match in ("all", "any"):
        assert matched(client, headers, match=match) == {"ada@example.com", "bob@example.com"}
    assert preview(client, other_headers, {"conditions": []})["count"] == 3


def test_sample_has_the_contact_shape_and_no_more(client, app_ctx):
    user_id, headers = merchant(client)
    contact(user_id, "ada@example.com", phone="+14155550100", first_name="Ada", last_name="Lovelace",
            attributes={"secret": "x"}, external_ids={"shopifyCustomerId": "1"})
    for index in range(3):
        contact(user_id, f"c{index}@example.com")
    body = preview(client, headers, {"match": "all", "conditions": []}, sampleSize=2)
    assert body["count"] == 4 and len(body["sample"]) == 2
    assert all(set(item) == {"id", "email", "phone", "firstName", "lastName"} for item in body["sample"])
    (ada,) = [item for item in preview(client, headers, {"conditions": []})["sample"]
              if item["email"] == "ada@example.com"]
    assert ada == {"id": ada["id"], "email": "ada@example.com", "phone": "+14155550100", "firstName": "Ada",
                   "lastName": "Lovelace"}


def test_conditions_never_reach_another_merchants_rows(client, app_ctx):
    user_id, headers = merchant(client)
    other_id, _ = merchant(client)
    mine = contact(user_id, "ada@example.com", consent={"email": "subscribed"}, attributes={"vip": True})
    theirs = contact(other_id, "ada@example.com", consent={"email": "subscribed"}, attributes={"vip": True})
    activity(theirs, "order_placed")
    # An activity row claiming to be the other merchant's is not this merchant's history.
    activity(mine, "lead", user_id=other_id)

    assert matched(client, headers, event("order_placed")) == set()
    assert matched(client, headers, event("lead")) == set()
    assert matched(client, headers, event("lead", negate=True)) == {"ada@example.com"}
    assert matched(client, headers, attribute("vip", "eq", True), consent("email")) == {"ada@example.com"}
    assert audiences.audience_size(other_id, {"conditions": [event("order_placed")]}) == 1


# --- Event conditions ---------------------------------------------------------------------------

@pytest.fixture()
def shoppers(client, app_ctx):
    """Ada checked out twice this week and bought; Bob checked out once 10 days ago; Cy did nothing."""
    user_id, headers = merchant(client)
    ada, bob = contact(user_id, "ada@example.com"), contact(user_id, "bob@example.com")
    contact(user_id, "cy@example.com")
    activity(ada, "checkout_started", days_ago=1, value=80.0, currency="USD")
    activity(ada, "checkout_started", days_ago=3, value=20.0, currency="EUR")
    activity(ada, "order_placed", days_ago=1, value=80.0, tags=["gift"])
    activity(bob, "checkout_started", days_ago=10, value="n/a", currency="usd")
    activity(bob, "custom", original_name="quiz_completed", days_ago=2)
    return headers


EVENT_CASES = [
    (event("checkout_started"), {"ada", "bob"}),
    (event("checkout_started", withinDays=7), {"ada"}),
    (event("checkout_started", withinDays=11), {"ada", "bob"}),
    (event("checkout_started", withinHours=25), {"ada"}),  # a day ago
    (event("checkout_started", withinHours=23), set()),
    (event("checkout_started", withinHours=240 + 1), {"ada", "bob"}),
    (event("checkout_started", withinHours=25, negate=True), {"bob", "cy"}),
    (event("checkout_started", minCount=2), {"ada"}),
    (event("checkout_started", minCount=3), set()),
    (event("checkout_started", withinDays=2, minCount=2), set()),
    (event("order_placed", negate=True), {"bob", "cy"}),
    (event("checkout_started", withinDays=7, negate=True), {"bob", "cy"}),
    (event("checkout_started", minCount=2, negate=True), {"bob", "cy"}),
    (event("custom"), {"bob"}),
    (event("custom", name="quiz_completed"), {"bob"}),
    (event("custom", name="Quiz_Completed"), set()),
    (event("page_viewed"), set()),
]


def test_event_conditions(client, shoppers):
    assert mismatches(client, shoppers, EVENT_CASES) == []


WHERE_CASES = [
    ({"currency": "USD"}, {"ada", "bob"}),  # text compares in any case
    ({"currency": "EUR"}, {"ada"}),
    ({"value": 80}, {"ada"}),
    ({"value": 20, "currency": "USD"}, set()),  # every property on the same event
    ({"value": {"gte": 50}}, {"ada"}),
    ({"value": {"gt": 80}}, set()),
    ({"value": {"gte": 10, "lt": 30}}, {"ada"}),
    ({"value": {"lte": 1000}}, {"ada"}),  # Bob's "n/a" is no number: no match, no error
    ({"value": {"neq": 80}}, {"ada", "bob"}),
    ({"value": {"eq": 20}}, {"ada"}),
    ({"missing": "x"}, set()),
]


def test_event_where_filters(client, shoppers):
    cases = [(event("checkout_started", where=where), expected) for where, expected in WHERE_CASES]
    assert mismatches(client, shoppers, cases) == []


def test_where_combines_with_min_count_and_window(client, shoppers):
    condition = event("checkout_started", withinDays=7, minCount=2, where={"value": {"gte": 10}})
    assert matched(client, shoppers, condition) == {"ada@example.com"}
    condition["where"] = {"value": {"gte": 50}}
    assert matched(client, shoppers, condition) == set()


# --- Attribute conditions -----------------------------------------------------------------------

@pytest.fixture()
def profiles(client, app_ctx):
    user_id, headers = merchant(client)
    contact(user_id, "ada@example.com", first_name="Ada", attributes={
        "country": "US", "orders": 5, "tags": ["VIP", "beta"], "plan": "Pro", "score": "12.5", "active": True})
    contact(user_id, "bob@example.com", first_name="Bob", phone="+14155550100", attributes={
        "country": "ca", "orders": 1, "tags": "vip-ish", "score": "n/a", "active": False, "email": "x@y.z"})
    contact(user_id, None, phone="+14155550101", attributes={"orders": "3", "country": None, "score": {"a": 1}})
    return headers


ADA, BOB, CY = "ada@example.com", "bob@example.com", "+14155550101"


ATTRIBUTE_CASES = [
    (attribute("country", "eq", "us"), {ADA}),
    (attribute("attributes.country", "eq", "US"), {ADA}),
    (attribute("country", "neq", "US"), {BOB, CY}),  # a missing value is not equal either
    (attribute("country", "in", ["US", "CA", "mx"]), {ADA, BOB}),
    (attribute("country", "contains", "A"), {BOB}),
    (attribute("plan", "eq", "pro"), {ADA}),
    (attribute("orders", "eq", 5), {ADA}),
    (attribute("orders", "eq", 5.0), {ADA}),
    (attribute("orders", "in", [1, 3]), {BOB, CY}),  # CY's "3" is text from an import
    (attribute("orders", "gt", 2), {ADA, CY}),
    (attribute("orders", "gte", 5), {ADA}),
    (attribute("orders", "lt", 3), {BOB}),
    (attribute("orders", "lte", 3), {BOB, CY}),
    (attribute("score", "gt", 10), {ADA}),  # "n/a" and an object never match, never fail
    (attribute("score", "lt", 100), {ADA}),
    (attribute("plan", "gt", 0), set()),
    (attribute("tags", "contains", "vip"), {ADA, BOB}),  # a list element, or a substring of text
    (attribute("tags", "contains", "bet"), set()),  # list elements match whole
    (attribute("active", "eq", True), {ADA}),
    (attribute("active", "eq", False), {BOB}),
    (attribute("active", "in", [True, "x"]), {ADA}),
    (attribute("country", "exists"), {ADA, BOB}),  # JSON null is no value
    (attribute("country", "exists", False), {CY}),
    (attribute("nothing", "exists"), set()),
    (attribute("email", "eq", "ADA@example.com"), {ADA}),
    (attribute("attributes.email", "exists"), {BOB}),
    (attribute("email", "neq", "ada@example.com"), {BOB, CY}),
    (attribute("email", "in", ["bob@EXAMPLE.com", "zed@example.com"]), {BOB}),
    (attribute("email", "contains", "B@EX"), {BOB}),
    (attribute("firstName", "contains", "d"), {ADA}),
    (attribute("firstName", "contains", "%"), set()),  # LIKE wildcards are literal
    (attribute("lastName", "exists"), set()),
    (attribute("phone", "exists"), {BOB, CY}),
    (attribute("phone", "exists", False), {ADA}),
    (attribute("phone", "eq", "+14155550100"), {BOB}),
]


def test_attribute_conditions(client, profiles):
    assert mismatches(client, profiles, ATTRIBUTE_CASES) == []


# --- Consent ------------------------------------------------------------------------------------

def test_consent_conditions(client, app_ctx):
    user_id, headers = merchant(client)
    ada = contact(user_id, "ada@example.com", consent={"email": "subscribed", "push": "subscribed"})
    db.session.add(PushSubscription(contact_id=ada.id, endpoint="https://push.example/1", p256dh="k", auth="a"))
    contact(user_id, "bob@example.com", phone="+14155550100",
            consent={"email": "unsubscribed", "sms": "subscribed", "push": "subscribed"})  # no push subscription
    contact(user_id, None, phone="+14155550101", consent={"email": "subscribed", "whatsapp": "bounced"})
    contact(user_id, "dee@example.com")

    assert matched(client, headers, consent("email")) == {ADA}  # subscribed but no address is no audience
    assert matched(client, headers, consent("email", status="unsubscribed")) == {BOB}
    assert matched(client, headers, consent("sms", status="subscribed")) == {BOB}
    assert matched(client, headers, consent("push")) == {ADA}
    assert matched(client, headers, consent("whatsapp", status="bounced")) == {CY}
    assert matched(client, headers, consent("whatsapp", status="complained")) == set()


# --- Combinations -------------------------------------------------------------------------------

def test_groups_nest_with_all_and_any(client, shoppers):
    bought_or_quiz = group("any", event("order_placed"), event("custom", name="quiz_completed"))
    assert matched(client, shoppers, bought_or_quiz) == {"ada@example.com", "bob@example.com"}
    assert matched(client, shoppers, bought_or_quiz, event("checkout_started", withinDays=7)) == {"ada@example.com"}
    assert matched(client, shoppers, bought_or_quiz, event("checkout_started", withinDays=7),
                   match="any") == {"ada@example.com", "bob@example.com"}
    deep = group("all", group("any", group("all", event("page_viewed")), group("all", event("lead", negate=True))))
    assert matched(client, shoppers, deep) == {"ada@example.com", "bob@example.com", "cy@example.com"}
    assert matched(client, shoppers, group("all", event("order_placed"), event("custom")), match="any") == set()


def test_spec_example(client, app_ctx):
    user_id, headers = merchant(client)
    people = {name: contact(user_id, f"{name}@example.com", attributes={"country": "US"},
                            consent={"email": "subscribed"}) for name in ("ada", "bob", "cy", "dee")}
    for name in ("ada", "bob", "cy", "dee"):
        activity(people[name], "checkout_started", days_ago=2)
    activity(people["bob"], "order_placed", days_ago=1)
    people["cy"].attributes = {"country": "FR"}
    people["dee"].consent = {"email": "unsubscribed"}
    db.session.commit()
    definition = {"match": "all", "conditions": [
        event("checkout_started", withinDays=7, minCount=1), event("order_placed", withinDays=7, negate=True),
        attribute("country", "eq", "US"), consent("email")]}
    assert preview(client, headers, definition)["count"] == 1


# --- Validation ---------------------------------------------------------------------------------

def _nested(levels: int) -> dict:
    node = event("lead")
    for _ in range(levels):
        node = group("all", node)
    return node


INVALID_DEFINITIONS = [
    ({"match": "some", "conditions": []}, "definition.match"),
    ({"conditions": "all"}, "definition.conditions"),
    ({"match": "all"}, "definition.conditions"),
    ({"conditions": [], "extra": 1}, "definition.extra"),
    ({"conditions": ["lead"]}, "definition.conditions[0]"),
    ({"conditions": [{"event": "lead"}]}, "definition.conditions[0].type"),
    ({"conditions": [{"type": "segment"}]}, "definition.conditions[0].type"),
    ({"conditions": [{"type": ["event"]}]}, "definition.conditions[0].type"),
    ({"conditions": [event("lead", color="red")]}, "definition.conditions[0].color"),
    ({"conditions": [{"type": "event"}]}, "definition.conditions[0].event"),
    ({"conditions": [event("signed_up")]}, "definition.conditions[0].event"),
    ({"conditions": [event("lead", name="x")]}, "definition.conditions[0].name"),
    ({"conditions": [event("custom", name="")]}, "definition.conditions[0].name"),
    ({"conditions": [event("lead"), event("lead", withinDays=0)]}, "definition.conditions[1].withinDays"),
    ({"conditions": [event("lead", withinDays=3651)]}, "definition.conditions[0].withinDays"),
    ({"conditions": [event("lead", withinDays="7")]}, "definition.conditions[0].withinDays"),
    ({"conditions": [event("lead", withinDays=7.5)]}, "definition.conditions[0].withinDays"),
    ({"conditions": [event("lead", withinHours=0)]}, "definition.conditions[0].withinHours"),
    ({"conditions": [event("lead", withinHours=87601)]}, "definition.conditions[0].withinHours"),
    ({"conditions": [event("lead", withinDays=1, withinHours=6)]}, "definition.conditions[0].withinHours"),
    ({"conditions": [event("lead", minCount=0)]}, "definition.conditions[0].minCount"),
    ({"conditions": [event("lead", minCount=True)]}, "definition.conditions[0].minCount"),
    ({"conditions": [event("lead", negate="yes")]}, "definition.conditions[0].negate"),
    ({"conditions": [event("lead", where=["value"])]}, "definition.conditions[0].where"),
    ({"conditions": [event("lead", where={"value": [1, 2]})]}, "definition.conditions[0].where.value"),
    ({"conditions": [event("lead", where={"value": None})]}, "definition.conditions[0].where.value"),
    ({"conditions": [event("lead", where={"value": {"between": 1}})]}, "definition.conditions[0].where.value.between"),
    ({"conditions": [event("lead", where={"value": {"gt": "10"}})]}, "definition.conditions[0].where.value.gt"),
    ({"conditions": [event("lead", where={"value": {}})]}, "definition.conditions[0].where.value"),
    ({"conditions": [event("lead", where={"": 1})]}, "definition.conditions[0].where."),
    ({"conditions": [attribute("country", "like", "US")]}, "definition.conditions[0].op"),
    ({"conditions": [{"type": "attribute", "field": "country"}]}, "definition.conditions[0].op"),
    ({"conditions": [{"type": "attribute", "op": "eq", "value": 1}]}, "definition.conditions[0].field"),
    ({"conditions": [attribute("country", "eq")]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "eq", None)]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "eq", {"a": 1})]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "in", "US")]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "in", [])]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "in", [["US"]])]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("country", "contains", 1)]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("orders", "gt", "10")]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("orders", "gt", True)]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("orders", "exists", "yes")]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("email", "gt", 1)]}, "definition.conditions[0].op"),
    ({"conditions": [attribute("email", "eq", 1)]}, "definition.conditions[0].value"),
    ({"conditions": [attribute("attributes.", "exists")]}, "definition.conditions[0].field"),
    ({"conditions": [attribute("x" * 101, "exists")]}, "definition.conditions[0].field"),
    ({"conditions": [attribute("country", "eq", "U\x00S")]}, "definition"),  # refused as the body is read, nested by field
    ({"conditions": [consent("fax")]}, "definition.conditions[0].channel"),
    ({"conditions": [{"type": "consent"}]}, "definition.conditions[0].channel"),
    ({"conditions": [consent("email", status="maybe")]}, "definition.conditions[0].status"),
    ({"conditions": [group("all")]}, "definition.conditions[0].conditions"),
    ({"conditions": [group("either", event("lead"))]}, "definition.conditions[0].match"),
    ({"conditions": [{"type": "group", "conditions": [{"type": "bogus"}]}]},
     "definition.conditions[0].conditions[0].type"),
    ({"conditions": [_nested(6)]}, "definition" + ".conditions[0]" * 6 + ".conditions"),
    ({"conditions": [event("lead")] * 51}, "definition.conditions"),
    ({"conditions": [group("any", *[event("lead")] * 25), group("any", *[event("lead")] * 24)]},
     "definition.conditions"),
]


def test_invalid_definitions_are_refused_with_their_path(client, app_ctx):
    _, headers = merchant(client)
    failures = []
    for definition, path in INVALID_DEFINITIONS:
        response = client.post(PREVIEW, headers=headers, json={"definition": definition})
        body = response.get_json()
        if response.status_code != 422 or body["code"] != "validation_failed" or path not in body["errors"]:
            failures.append((definition, path, response.status_code, body))
    assert failures == []


def test_validation_reports_every_problem(client, app_ctx):
    _, headers = merchant(client)
    definition = {"match": "x", "conditions": [event("lead", withinDays=0), attribute("a", "gt", "b")]}
    errors = client.post(PREVIEW, headers=headers, json={"definition": definition}).get_json()["errors"]
    assert errors == {
        "definition.match": ["Must be one of: all, any."],
        "definition.conditions[0].withinDays": ["Must be between 1 and 3650."],
        "definition.conditions[1].value": ["Not a valid number."],
    }


def test_limits_that_are_allowed(client, app_ctx):
    _, headers = merchant(client)
    assert preview(client, headers, {"conditions": [_nested(5)]})["count"] == 0
    assert preview(client, headers, {"conditions": [event("lead")] * 50})["count"] == 0


@pytest.mark.parametrize("body, field", [
    ({}, "definition"),
    ({"definition": []}, "definition"),
    ({"definition": {"conditions": []}, "sampleSize": 101}, "sampleSize"),
    ({"definition": {"conditions": []}, "extra": 1}, "extra"),
])
def test_preview_body_is_checked(client, app_ctx, body, field):
    _, headers = merchant(client)
    response = client.post(PREVIEW, headers=headers, json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"]


def test_preview_needs_a_token(client, app_ctx):
    assert client.post(PREVIEW, json={"definition": {"conditions": []}}).status_code == 401


# --- The compiler ------------------------------------------------------------------------------

EVERYTHING = {"match": "any", "conditions": [
    event("checkout_started", withinDays=7, minCount=2, where={"value": {"gte": 10}, "currency": "USD"}),
    event("order_placed", negate=True),
    attribute("orders", "gt", 2), attribute("tags", "contains", "vip"), attribute("email", "in", ["a@b.c"]),
    consent("push"), group("all", consent("email"), attribute("country", "neq", "US")),
]}


def test_preview_is_two_statements_whatever_the_audience_size(client, app_ctx):
    user_id, _ = merchant(client)
    for index in range(20):
        person = contact(user_id, f"c{index}@example.com", attributes={"orders": index, "tags": ["vip"]})
        activity(person, "checkout_started", value=50.0)
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    connection = db.session.connection()
    sa.event.listen(connection, "before_cursor_execute", record)
    try:
        result = audiences.preview(user_id, EVERYTHING, sample_size=10)
    finally:
        sa.event.remove(connection, "before_cursor_execute", record)
    assert result == {"count": 20, "estimated": False, "sample": result["sample"]} and len(result["sample"]) == 10
    # Beside them only the statement timeout is set and reset, each query in a savepoint.
    assert len([statement for statement in statements if "contact_activities" in statement]) == 2


def test_compiled_definition_is_one_bound_composable_select(app_ctx):
    user_id = uuid.uuid4()
    hostile = "x'); DROP TABLE contacts; --"
    definition = {"conditions": [attribute(hostile, "eq", hostile), event("lead", where={hostile: hostile})]}
    compiled = compile_definition(user_id, definition).compile(dialect=postgresql.dialect())
    assert hostile not in str(compiled) and hostile in compiled.params.values()
    # The launch engine unions the audiences of a campaign and joins them to contacts.
    union = sa.union(compile_definition(user_id, EVERYTHING), compile_definition(user_id, definition)).subquery()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(union)) == 0
    assert db.session.scalars(sa.select(Contact.id).where(Contact.id.in_(compile_definition(user_id, EVERYTHING)))
                              ).all() == []


def test_compile_refuses_an_invalid_definition(app_ctx):
    from app.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        compile_definition(uuid.uuid4(), {"conditions": [consent("fax")]})
    assert "definition.conditions[0].channel" in caught.value.errors


# --- Audiences of a campaign --------------------------------------------------------------------

def _audiences(campaign_id) -> str:
    return f"/api/v1/campaigns/{campaign_id}/audiences"


US_BUYERS = {"match": "all", "conditions": [attribute("country", "eq", "US")]}


def test_audience_crud(client, app_ctx):
    user_id, headers = merchant(client)
    contact(user_id, "ada@example.com", attributes={"country": "US"})
    contact(user_id, "bob@example.com", attributes={"country": "CA"})
    url = _audiences(campaign(user_id).id)

    response = client.post(url, headers=headers, json={"name": "US", "definition": US_BUYERS})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert set(created) == {"id", "campaignId", "name", "definition", "lastSize", "lastComputedAt",
                            "createdAt", "updatedAt"}
    assert created["definition"] == US_BUYERS and created["lastSize"] == 1
    assert created["lastComputedAt"].endswith("+00:00")
    assert client.get(f"{url}/{created['id']}", headers=headers).get_json() == created
    listed = client.get(url, headers=headers)
    assert listed.get_json() == [created] and "X-Pagination" in listed.headers

    renamed = client.patch(f"{url}/{created['id']}", headers=headers, json={"name": "Americans"}).get_json()
    assert renamed["name"] == "Americans" and renamed["lastSize"] == 1
    everyone = client.patch(f"{url}/{created['id']}", headers=headers,
                            json={"definition": {"match": "any", "conditions": []}}).get_json()
    assert everyone["lastSize"] == 2 and everyone["definition"] == {"match": "any", "conditions": []}

    contact(user_id, "cy@example.com")
    refreshed = client.post(f"{url}/{created['id']}/refresh", headers=headers).get_json()
    assert refreshed["lastSize"] == 3

    assert client.delete(f"{url}/{created['id']}", headers=headers).status_code == 204
    assert client.get(f"{url}/{created['id']}", headers=headers).status_code == 404
    assert client.get(url, headers=headers).get_json() == []


@pytest.mark.parametrize("body, field", [
    ({"name": "", "definition": US_BUYERS}, "name"),
    ({"name": "   ", "definition": US_BUYERS}, "name"),
    ({"name": "x" * 201, "definition": US_BUYERS}, "name"),
    ({"definition": US_BUYERS}, "name"),
    ({"name": "x"}, "definition"),
    ({"name": "x", "definition": "everyone"}, "definition"),
    ({"name": "x", "definition": {"conditions": [event("lead", withinDays=0)]}}, "definition.conditions[0].withinDays"),
    ({"name": "x", "definition": US_BUYERS, "lastSize": 5}, "lastSize"),
])
def test_invalid_audiences_are_refused(client, app_ctx, body, field):
    user_id, headers = merchant(client)
    url = _audiences(campaign(user_id).id)
    response = client.post(url, headers=headers, json=body)
    assert response.status_code == 422 and field in response.get_json()["errors"], response.get_json()
    assert client.get(url, headers=headers).get_json() == []


def test_invalid_patch_changes_nothing(client, app_ctx):
    user_id, headers = merchant(client)
    url = _audiences(campaign(user_id).id)
    created = client.post(url, headers=headers, json={"name": "US", "definition": US_BUYERS}).get_json()
    response = client.patch(f"{url}/{created['id']}", headers=headers,
                            json={"name": "Renamed", "definition": {"conditions": [consent("fax")]}})
    assert response.status_code == 422
    assert "definition.conditions[0].channel" in response.get_json()["errors"]
    db.session.expire_all()
    assert client.get(f"{url}/{created['id']}", headers=headers).get_json() == created


def test_another_merchants_campaign_and_audiences_answer_404(client, app_ctx):
    user_id, headers = merchant(client)
    other_id, other_headers = merchant(client)
    theirs = campaign(other_id)
    their_audience = client.post(_audiences(theirs.id), headers=other_headers,
                                 json={"name": "All", "definition": {"conditions": []}}).get_json()
    mine = campaign(user_id)
    body = {"name": "x", "definition": {"conditions": []}}
    for campaign_id in (theirs.id, uuid.uuid4()):
        url = _audiences(campaign_id)
        assert client.get(url, headers=headers).status_code == 404
        assert client.post(url, headers=headers, json=body).status_code == 404
        for method in ("get", "patch", "delete"):
            response = getattr(client, method)(f"{url}/{their_audience['id']}", headers=headers, json={"name": "y"})
            assert response.status_code == 404
        assert client.post(f"{url}/{their_audience['id']}/refresh", headers=headers).status_code == 404
    # Their audience through my own campaign's path is not found either.
    assert client.get(f"{_audiences(mine.id)}/{their_audience['id']}", headers=headers).status_code == 404
    assert client.delete(f"{_audiences(mine.id)}/{their_audience['id']}", headers=headers).status_code == 404
    assert db.session.get(Audience, uuid.UUID(their_audience["id"])).name == "All"


@pytest.mark.parametrize("status, editable", [
    ("draft", True), ("scheduled", True), ("running", False), ("paused", False), ("completed", False),
])
def test_audiences_change_only_before_launch(client, app_ctx, status, editable):
    user_id, headers = merchant(client)
    owner = campaign(user_id)
    url = _audiences(owner.id)
    created = client.post(url, headers=headers, json={"name": "All", "definition": {"conditions": []}}).get_json()
    owner.status = status
    db.session.commit()

    responses = [
        client.post(url, headers=headers, json={"name": "More", "definition": {"conditions": []}}),
        client.patch(f"{url}/{created['id']}", headers=headers, json={"name": "Renamed"}),
        client.delete(f"{url}/{created['id']}", headers=headers),
    ]
    assert [r.status_code for r in responses] == ([201, 200, 204] if editable else [409, 409, 409])
    if not editable:
        assert responses[0].get_json()["code"] == "conflict"
        db.session.expire_all()
        assert client.get(url, headers=headers).get_json() == [created]
        assert client.post(f"{url}/{created['id']}/refresh", headers=headers).status_code == 200


def _many_contacts(user_id: uuid.UUID, count: int) -> None:
    """`count` contacts, every third with a checkout yesterday (set-based, as a big import would be)."""
    db.session.execute(sa.text(
        """INSERT INTO contacts ("userId", email, consent) SELECT CAST(:u AS uuid), 'm' || g || '@example.com',
           '{"email": "subscribed"}' FROM generate_series(1, :n) AS g"""), {"u": str(user_id), "n": count})
    db.session.execute(sa.text(
        """INSERT INTO contact_activities ("userId", "contactId", "eventType", "originalName", "occurredAt")
           SELECT "userId", id, 'checkout_started', 'checkout', timezone('UTC', now()) - interval '1 day'
           FROM contacts WHERE "userId" = CAST(:u AS uuid) AND right(email, 13) ~ '^[0-9]*[0369]@'"""),
        {"u": str(user_id)})
    db.session.flush()


CHECKED_OUT = {"conditions": [{"type": "event", "event": "checkout_started", "withinDays": 7}]}


def test_a_count_too_slow_to_wait_for_is_estimated_and_marked(client, app_ctx, monkeypatch):
    user_id, headers = merchant(client)
    _many_contacts(user_id, 30_000)
    exact = audiences.audience_size(user_id, CHECKED_OUT)
    assert exact > 5000
    monkeypatch.setattr(audiences, "EXACT_COUNT_SECONDS", 0.001)
    started = time.perf_counter()
    body = client.post(PREVIEW, headers=headers, json={"definition": CHECKED_OUT}).get_json()
    assert time.perf_counter() - started < 1.5
    assert body["estimated"] is True and abs(body["count"] - exact) < 0.35 * exact
    assert len(body["sample"]) == 10


def test_an_audience_too_big_to_count_at_once_is_counted_by_a_worker(client, app_ctx, monkeypatch):
    user_id, headers = merchant(client)
    _many_contacts(user_id, 30_000)
    monkeypatch.setattr(audiences, "EXACT_COUNT_SECONDS", 0.001)
    campaign = client.post("/api/v1/campaigns", headers=headers, json={"name": "Big"}).get_json()
    created = client.post(f"/api/v1/campaigns/{campaign['id']}/audiences", headers=headers,
                          json={"name": "checked out", "definition": CHECKED_OUT})
    assert created.status_code == 201 and created.get_json()["lastSize"] is None
    assert audiences.count_unsized_audiences() == 1
    shown = client.get(f"/api/v1/campaigns/{campaign['id']}/audiences/{created.get_json()['id']}", headers=headers)
    assert shown.get_json()["lastSize"] == audiences.audience_size(user_id, CHECKED_OUT)
    assert audiences.count_unsized_audiences() == 0
