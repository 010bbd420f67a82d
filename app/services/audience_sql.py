"""The audience definition language (SPEC §6 "Audience definition"): its rules and its SQL.

`validate_definition` refuses anything the compiler would not understand and names the JSON path
of every bad part. `compile_definition` turns a valid definition into one `SELECT contacts.id`,
always scoped to the merchant: activity conditions are EXISTS / count subqueries on
`contact_activities` (also scoped to the merchant), and every value from the definition is a bound
parameter.

Comparison rules, shared by attribute conditions and event `where` filters:
- strings compare case-insensitively (`eq`, `neq`, `in`, `contains`);
- `gt`/`gte`/`lt`/`lte` compare numbers, and also numeric strings (CSV imports store text); any
  other value never matches, and never makes the query fail;
- `neq` matches a missing value too; `contains` on a list means "has this element" (any case);
- `exists` means present, not null and not empty (`"value": false` asks for the opposite).
"""
from __future__ import annotations

import math
import operator
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from app.channels import catalogue
from app.channels.catalogue import CHANNEL_TYPES
from app.errors import ValidationFailed
from app.models import Contact, ContactActivity, PushSubscription
from app.models.contacts import CONSENT_VALUES
from app.sources.normalize import NORMALIZED_TYPES

MATCHES = ("all", "any")
CONDITION_TYPES = ("event", "attribute", "consent", "group")
ATTRIBUTE_OPS = ("eq", "neq", "in", "contains", "gt", "gte", "lt", "lte", "exists")
PROPERTY_OPS = ("eq", "neq", "gt", "gte", "lt", "lte")
NUMERIC_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}
PROFILE_FIELDS = {
    "email": Contact.email, "phone": Contact.phone, "firstName": Contact.first_name, "lastName": Contact.last_name,
}
ATTRIBUTE_PREFIX = "attributes."
SUBSCRIBED = "subscribed"
MAX_GROUP_DEPTH = 5
MAX_CONDITIONS = 50
MAX_WITHIN_DAYS = 3650
MAX_WITHIN_HOURS = MAX_WITHIN_DAYS * 24
MAX_MIN_COUNT = 1_000_000
MAX_IN_VALUES = 100
MAX_WHERE_PROPERTIES = 20
KEY_MAX = 100
TEXT_MAX = 500
# Only text that PostgreSQL's numeric input surely accepts is cast; the bounds keep it finite.
NUMERIC_TEXT = r"^-?[0-9]{1,30}(\.[0-9]{1,30})?$"

UNKNOWN = "Unknown field."
REQUIRED = "Missing data for required field."
NOT_SCALAR = "Must be a string, a number or a boolean."


# --- Validation ---------------------------------------------------------------------------------

Rule = Callable[[Any], "str | None"]  # the message when a value is wrong, else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text_problem(value: Any, maximum: int = TEXT_MAX) -> str | None:
    if not isinstance(value, str):
        return "Not a valid string."
    if not 1 <= len(value) <= maximum:
        return f"Length must be between 1 and {maximum}."
    # PostgreSQL text and jsonb cannot hold U+0000.
    return "Must not contain NUL characters." if "\x00" in value else None


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _text_problem(value)
    return None if isinstance(value, bool) or _is_number(value) else NOT_SCALAR


def _number_problem(value: Any) -> str | None:
    return None if _is_number(value) else "Not a valid number."


def _not_one_of(options: tuple[str, ...]) -> str:
    return f"Must be one of: {', '.join(options)}."


def _one_of(options: tuple[str, ...]) -> Rule:
    message = _not_one_of(options)
    return lambda value: None if isinstance(value, str) and value in options else message


def _integer(low: int, high: int) -> Rule:
    def rule(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return "Not a valid integer."
        return None if low <= value <= high else f"Must be between {low} and {high}."

    return rule


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "Not a valid boolean."


def _anything(value: Any) -> None:
    """Checked by the condition's own rules, which need its other fields."""


# Each condition type's fields; `type` is checked before these are looked up.
_FIELDS: dict[str, dict[str, Rule]] = {
    "event": {"type": _anything, "event": _one_of(NORMALIZED_TYPES), "name": _text_problem,
              "withinDays": _integer(1, MAX_WITHIN_DAYS), "withinHours": _integer(1, MAX_WITHIN_HOURS),
              "minCount": _integer(1, MAX_MIN_COUNT),
              "negate": _boolean, "where": _anything},
    "attribute": {"type": _anything, "field": lambda value: _text_problem(value, KEY_MAX),
                  "op": _one_of(ATTRIBUTE_OPS), "value": _anything},
    "consent": {"type": _anything, "channel": _one_of(CHANNEL_TYPES), "status": _one_of(CONSENT_VALUES)},
    "group": {"type": _anything, "match": _one_of(MATCHES), "conditions": _anything},
}
_REQUIRED = {"event": ("event",), "attribute": ("field", "op"), "consent": ("channel",), "group": ("conditions",)}
_ROOT_FIELDS: dict[str, Rule] = {"match": _one_of(MATCHES), "conditions": _anything}


class _DefinitionCheck:
    """One walk over a definition, collecting every problem under its JSON path."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}
        self.conditions = 0

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def fields(self, node: Any, path: str, rules: Mapping[str, Rule], required: tuple[str, ...]) -> bool:
        """Check an object's keys and simple values; False when it is not an object at all."""
        if not isinstance(node, dict):
            self.fail(path, "Must be an object.")
            return False
        for key, value in node.items():
            message = rules[key](value) if key in rules else UNKNOWN
            if message:
                self.fail(f"{path}.{key}", message)
        for key in required:
            if key not in node:
                self.fail(f"{path}.{key}", REQUIRED)
        return True

    def group(self, node: Any, path: str, depth: int) -> None:
        rules = _FIELDS["group"] if depth else _ROOT_FIELDS
        if not self.fields(node, path, rules, ("conditions",)) or "conditions" not in node:
            return
        conditions = node["conditions"]
        if not isinstance(conditions, list):
            self.fail(f"{path}.conditions", "Must be a list.")
        elif depth > MAX_GROUP_DEPTH:
            self.fail(f"{path}.conditions", f"Groups may nest at most {MAX_GROUP_DEPTH} deep.")
        elif depth and not conditions:
            self.fail(f"{path}.conditions", "A group needs at least one condition.")
        else:
            for index, condition in enumerate(conditions):
                self.condition(condition, f"{path}.conditions[{index}]", depth)

    def condition(self, node: Any, path: str, depth: int) -> None:
        self.conditions += 1
        # Whatever JSON the client sent as the type; None when the condition is not an object.
        kind: Any = node.get("type") if isinstance(node, dict) else None
        if isinstance(node, dict) and kind not in CONDITION_TYPES:
            self.fail(f"{path}.type", REQUIRED if kind is None else _not_one_of(CONDITION_TYPES))
        elif kind == "group":
            self.group(node, path, depth + 1)
        elif not self.fields(node, path, _FIELDS.get(kind, {}), _REQUIRED.get(kind, ())):
            return
        elif kind == "event":
            self.event(node, path)
        elif kind == "attribute":
            self.attribute(node, path)

    def event(self, node: dict[str, Any], path: str) -> None:
        if "name" in node and node.get("event") != "custom":
            self.fail(f"{path}.name", "Only custom events have a name to match.")
        if "withinDays" in node and "withinHours" in node:
            self.fail(f"{path}.withinHours", "Give withinDays or withinHours, not both.")
        if "where" in node:
            self.where(node["where"], f"{path}.where")

    def where(self, where: Any, path: str) -> None:
        if not isinstance(where, dict):
            self.fail(path, "Must be an object.")
        elif len(where) > MAX_WHERE_PROPERTIES:
            self.fail(path, f"At most {MAX_WHERE_PROPERTIES} properties.")
        else:
            for key, test in where.items():
                if key_problem := _text_problem(key, KEY_MAX):
                    self.fail(f"{path}.{key}", f"Property name: {key_problem}")
                elif isinstance(test, dict):
                    self.property_ops(test, f"{path}.{key}")
                elif message := _scalar_problem(test):
                    self.fail(f"{path}.{key}", message)

    def property_ops(self, ops: dict[str, Any], path: str) -> None:
        if not ops:
            self.fail(path, f"Give at least one of: {', '.join(PROPERTY_OPS)}.")
        for op, operand in ops.items():
            if op not in PROPERTY_OPS:
                self.fail(f"{path}.{op}", f"Unknown operator; use one of: {', '.join(PROPERTY_OPS)}.")
            elif message := (_number_problem if op in NUMERIC_OPS else _scalar_problem)(operand):
                self.fail(f"{path}.{op}", message)

    def attribute(self, node: dict[str, Any], path: str) -> None:
        op = node.get("op")
        if op not in ATTRIBUTE_OPS or f"{path}.field" in self.errors:
            return
        field: str = node["field"]  # required, and checked to be text
        on_profile = field in PROFILE_FIELDS
        if on_profile and op in NUMERIC_OPS:
            self.fail(f"{path}.op", "Numeric comparisons apply to attributes, not to email, phone or names.")
        elif field.startswith(ATTRIBUTE_PREFIX) and _text_problem(field.removeprefix(ATTRIBUTE_PREFIX)):
            self.fail(f"{path}.field", "Name the attribute after 'attributes.'.")
        if "value" not in node:
            if op != "exists":
                self.fail(f"{path}.value", REQUIRED)
        elif message := _value_problem(op, node["value"], on_profile):
            self.fail(f"{path}.value", message)


def _value_problem(op: str, value: Any, on_profile: bool) -> str | None:
    """What is wrong with an attribute condition's value for its operator, if anything."""
    if op == "exists":
        return _boolean(value)
    if op in NUMERIC_OPS:
        return _number_problem(value)
    # Profile columns are text, and so is what `contains` looks for.
    item_problem = _text_problem if op == "contains" or on_profile else _scalar_problem
    if op != "in":
        return item_problem(value)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
        return f"Must be a list of 1 to {MAX_IN_VALUES} values."
    return next(filter(None, map(item_problem, value)), None)


def text_problem(value: Any, maximum: int = TEXT_MAX) -> str | None:
    """What is wrong with a name or label (None: nothing), by the grammar's rules for text."""
    return _text_problem(value, maximum)


def where_problems(where: Any, path: str) -> dict[str, list[str]]:
    """The problems of an event `where` filter used on its own (flows' triggers and exits), by path."""
    check = _DefinitionCheck()
    check.where(where, path)
    return check.errors


def where_criteria(properties: Any, where: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    """A valid event `where` filter as conditions on an event's `properties` (a JSONB column)."""
    return [_compare(_Value.of_key(properties, key), op, operand)
            for key, test in where.items()
            for op, operand in (test.items() if isinstance(test, dict) else [("eq", test)])]


def validate_definition(definition: Any) -> None:
    """Raise ValidationFailed, with errors keyed by JSON path, unless the definition is valid."""
    check = _DefinitionCheck()
    check.group(definition, "definition", depth=0)
    if check.conditions > MAX_CONDITIONS:
        check.fail("definition.conditions", f"At most {MAX_CONDITIONS} conditions in all, counting those in groups.")
    if check.errors:
        raise ValidationFailed("The audience definition is not valid.", errors=check.errors)


# --- Compilation --------------------------------------------------------------------------------

def compile_definition(user_id: uuid.UUID, definition: Mapping[str, Any]) -> sa.Select[uuid.UUID]:
    """`SELECT contacts.id` of the merchant's contacts that match; raises ValidationFailed first if
    the definition is not valid. Composable: callers UNION it or use it in `IN (...)`."""
    validate_definition(definition)
    stmt = sa.select(Contact.id).where(Contact.user_id == user_id)
    if definition["conditions"]:
        stmt = stmt.where(_Compiler(user_id).group(definition))
    # Never folded into an enclosing query over contacts: it is always a complete query of its own.
    return stmt.correlate(None)


@dataclass(frozen=True)
class _Compiler:
    user_id: uuid.UUID

    def condition(self, node: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        by_type = {"event": self.event, "attribute": self.attribute, "consent": self.consent, "group": self.group}
        return by_type[node["type"]](node)

    def group(self, node: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        parts = [self.condition(child) for child in node["conditions"]]
        return sa.or_(*parts) if node.get("match", "all") == "any" else sa.and_(*parts)

    def event(self, node: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        activity = ContactActivity
        # The merchant is checked on the activity too, not only through the contact.
        criteria = [activity.contact_id == Contact.id, activity.user_id == self.user_id,
                    activity.event_type == node["event"]]
        if "name" in node:
            criteria.append(activity.original_name == node["name"])
        if "withinDays" in node:
            criteria.append(activity.occurred_at >= _utc_now() - timedelta(days=node["withinDays"]))
        if "withinHours" in node:
            criteria.append(activity.occurred_at >= _utc_now() - timedelta(hours=node["withinHours"]))
        criteria += where_criteria(activity.properties, node.get("where", {}))
        min_count = node.get("minCount", 1)
        if min_count == 1:
            happened = sa.exists().where(*criteria).correlate(Contact)
        else:
            counted = sa.select(sa.func.count()).where(*criteria).correlate(Contact).scalar_subquery()
            happened = counted >= min_count
        return sa.not_(happened) if node.get("negate") else happened

    def attribute(self, node: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        field = node["field"]
        if field in PROFILE_FIELDS:
            value = _Value(text=PROFILE_FIELDS[field])
        else:
            value = _Value.of_key(Contact.attributes, field.removeprefix(ATTRIBUTE_PREFIX))
        return _compare(value, node["op"], node.get("value", True))

    def consent(self, node: Mapping[str, Any]) -> sa.ColumnElement[bool]:
        channel, status = node["channel"], node.get("status", SUBSCRIBED)
        stated = Contact.consent[channel].astext == status
        # Consent to a channel the contact cannot be reached on is no audience for it (the same
        # addresses as `consent.addressable_channels`: push needs a browser subscription).
        return sa.and_(stated, _has_address(channel)) if status == SUBSCRIBED else stated


def contact_address(channel_type: str) -> sa.SQLColumnExpression[Any]:
    """What a contact is reached at on the channel (NULL: they cannot be): the email address, the
    phone number, or for push the word "push" when they have a browser subscription (the sender
    reads the subscriptions themselves). Unknown channels raise (catalogue.UnknownChannel)."""
    kind = catalogue.spec(channel_type).address
    if kind == "push":
        return sa.case((_push_subscribed(), "push"), else_=None)
    return {"email": Contact.email, "phone": Contact.phone}[kind]


def _has_address(channel: str) -> sa.ColumnElement[bool]:
    # Push as a plain EXISTS rather than the CASE above: the planner makes it a semi-join.
    if catalogue.spec(channel).address == "push":
        return _push_subscribed()
    return contact_address(channel).is_not(None)


def _push_subscribed() -> sa.ColumnElement[bool]:
    return sa.exists().where(PushSubscription.contact_id == Contact.id).correlate(Contact)


def _utc_now() -> sa.ColumnElement[Any]:
    # Activity times are naive UTC (`timestamp without time zone`), so "now" must be too.
    return sa.func.timezone("UTC", sa.func.now(), type_=sa.DateTime())


def _decimal(number: int | float) -> Decimal:
    return Decimal(str(number))


@dataclass(frozen=True)
class _Value:
    """What a comparison reads: a profile column, or one key of a jsonb object."""

    text: sa.SQLColumnExpression[Any]  # the value as text (`->>` for a jsonb key)
    json: sa.ColumnElement[Any] | None = None  # the jsonb value itself; None for a column

    @classmethod
    def of_key(cls, document: Any, key: str) -> _Value:
        return cls(text=document[key].astext, json=document[key])

    def kind(self) -> sa.ColumnElement[str]:
        return sa.func.jsonb_typeof(self.json)

    def number(self) -> sa.ColumnElement[Any]:
        """The value as numeric, else NULL. CASE keeps the cast away from anything it would fail on."""
        numeric = sa.cast(self.text, sa.Numeric)
        numeric_text = sa.and_(self.kind() == "string", self.text.regexp_match(NUMERIC_TEXT))
        return sa.case((self.kind() == "number", numeric), (numeric_text, numeric))

    def present(self) -> sa.ColumnElement[bool]:
        # `->>` gives NULL for a missing key and for JSON null alike.
        return sa.func.coalesce(self.text, "") != ""

    def equals_any(self, items: list[Any]) -> sa.ColumnElement[bool]:
        texts = [sa.func.lower(sa.cast(item, sa.Text)) for item in items if isinstance(item, str)]
        numbers = [_decimal(item) for item in items if _is_number(item)]
        flags = ["true" if item else "false" for item in items if isinstance(item, bool)]
        tests: list[sa.ColumnElement[bool]] = []
        if texts:
            tests.append(sa.func.lower(self.text).in_(texts))
        if numbers:
            tests.append(self.number().in_(numbers))
        if flags:
            tests.append(sa.and_(self.kind() == "boolean", self.text.in_(flags)))
        return sa.or_(*tests)

    def contains(self, needle: str) -> sa.ColumnElement[bool]:
        in_text = self.text.icontains(needle, autoescape=True)
        if self.json is None:
            return in_text
        elements = sa.func.jsonb_array_elements_text(self.json).table_valued("value")
        has_element = sa.exists().where(sa.func.lower(elements.c.value) == sa.func.lower(sa.cast(needle, sa.Text)))
        return sa.case((self.kind() == "array", has_element), (self.kind() == "string", in_text), else_=sa.false())


def _compare(value: _Value, op: str, operand: Any) -> sa.ColumnElement[bool]:
    if op == "exists":
        return value.present() if operand else sa.not_(value.present())
    if op in NUMERIC_OPS:
        return NUMERIC_OPS[op](value.number(), _decimal(operand))
    if op == "contains":
        return value.contains(operand)
    matches = value.equals_any(operand if op == "in" else [operand])
    # A missing value is "not equal" as well; coalesce keeps its NULL from swallowing the NOT.
    return sa.not_(sa.func.coalesce(matches, False)) if op == "neq" else matches
