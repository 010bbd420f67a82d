"""Emulator of the Shopify GraphQL Admin API (`POST /admin/api/{version}/graphql.json`).

Webhook subscriptions (listing, creating and deleting them, and delivering events to them) are in
tests.emulators.shopify_webhooks; `ShopifyEmulator.webhooks` holds them.

It understands enough GraphQL to answer the queries a sync client sends: the `customers`, `orders`
and `abandonedCheckouts` connections (plus `shop`, `customer(id:)`, `order(id:)`), with `first`/
`last`, `after`/`before`, `reverse`, `sortKey` and `query` arguments given inline or as variables,
aliases, fragments, and a response projected to exactly the fields asked for. Cost is modelled the
way Shopify documents it (a connection costs 2 + first x one item's cost; objects 1, scalars 0) and
drawn from a leaky bucket whose state is reported in `extensions.cost` on every answer.

Sources for the formats: shopify.dev "GraphQL Admin API rate limits", the AbandonedCheckout object
and AbandonedCheckoutSortKeys enum pages, and throttled/401 response examples from Shopify's forums.
"""
from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, _seconds, json_response
from tests.emulators.shopify_webhooks import MUTATION_COST, Delivery, WebhookGraphQLError, WebhookRegistry

INVALID_TOKEN_BODY = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
MAX_PAGE_SIZE = 250
SINGLE_QUERY_MAX_COST = 1000
CONNECTIONS = ("customers", "orders", "abandonedCheckouts")

# Sort keys each connection accepts (per the Admin API enums). Ordering is emulated for ID,
# CREATED_AT and UPDATED_AT; the other valid keys fall back to ID order. Note that
# abandonedCheckouts has no UPDATED_AT key: asking for it is a GraphQL error, as on Shopify.
SORT_KEYS: dict[str, tuple[str, str, frozenset[str]]] = {
    "customers": ("CustomerSortKeys", "Customer", frozenset(
        {"CREATED_AT", "ID", "LOCATION", "NAME", "RELEVANCE", "UPDATED_AT"})),
    "orders": ("OrderSortKeys", "Order", frozenset(
        {"CREATED_AT", "CUSTOMER_NAME", "DESTINATION", "FINANCIAL_STATUS", "FULFILLMENT_STATUS", "ID",
         "ORDER_NUMBER", "PO_NUMBER", "PROCESSED_AT", "RELEVANCE", "TOTAL_ITEMS_QUANTITY", "TOTAL_PRICE",
         "UPDATED_AT"})),
    "abandonedCheckouts": ("AbandonedCheckoutSortKeys", "AbandonedCheckout", frozenset(
        {"CHECKOUT_ID", "CREATED_AT", "CUSTOMER_NAME", "ID", "RELEVANCE", "TOTAL_PRICE"})),
}
_SORT_FIELDS = {"CREATED_AT": "createdAt", "UPDATED_AT": "updatedAt"}


# =============================================================================================
# A minimal GraphQL reader: enough of the grammar for queries, not a validator.
# =============================================================================================
class GraphQLError(Exception):
    def __init__(self, message: str, code: str | None = None, path: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.path = code, path

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": str(self)}
        if self.path:
            error["path"] = self.path
        if self.code:
            error["extensions"] = {"code": self.code}
        return error


@dataclass
class Field:
    name: str
    alias: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    selections: list[Field] | None = None  # None for a scalar leaf

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class _Spread:
    fragment: str


_TOKEN = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)          # commas are insignificant in GraphQL
  | (?P<block>"""(?:[^"]|"(?!""))*""")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<spread>\.\.\.)
  | (?P<var>\$[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!(){}\[\]:=@|&])
''', re.VERBOSE)


def _tokenize(source: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise GraphQLError(f'Parse error on "{source[pos]}" at character {pos}')
        if match.lastgroup != "skip":
            tokens.append((match.lastgroup or "", match.group()))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens; variables are substituted while parsing."""

    def __init__(self, source: str, variables: dict[str, Any]) -> None:
        self.tokens = _tokenize(source)
        self.pos = 0
        self.variables = dict(variables)
        self.fragments: dict[str, list[Field | _Spread]] = {}

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def peek_kind(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise GraphQLError(f'Parse error on "{token or "end of document"}" (expected {expected or "more"})')
        self.pos += 1
        return token

    def document(self, operation_name: str | None) -> tuple[str, list[Field]]:
        operations: list[tuple[str, str | None, list[Field | _Spread]]] = []
        while self.peek() is not None:
            if self.peek() == "fragment":
                self.take()
                name = self.take()
                self.take("on")
                self.take()
                self.skip_directives()
                self.fragments[name] = self.selection_set()
            else:
                operations.append(self.operation())
        return self._pick(operations, operation_name)

    def operation(self) -> tuple[str, str | None, list[Field | _Spread]]:
        if self.peek() == "{":
            return "query", None, self.selection_set()
        kind = self.take()
        if kind not in ("query", "mutation", "subscription"):
            raise GraphQLError(f'Parse error on "{kind}"')
        name = self.take() if self.peek_kind() == "name" else None
        if self.peek() == "(":
            self.variable_definitions()
        self.skip_directives()
        return kind, name, self.selection_set()

    def _pick(self, operations: list[tuple[str, str | None, list[Field | _Spread]]],
              operation_name: str | None) -> tuple[str, list[Field]]:
        chosen = [op for op in operations if operation_name in (None, op[1])]
        if not chosen:
            raise GraphQLError(f'No operation named "{operation_name}"')
        kind, _, selections = chosen[0]
        if kind not in ("query", "mutation"):
            raise GraphQLError(f"The emulator answers queries and mutations, not {kind}s")
        return kind, self.resolve(selections, depth=0)

    def variable_definitions(self) -> None:
        # `($first: Int = 50, $after: String)`: only the defaults matter to us.
        self.take("(")
        while self.peek() != ")":
            name = self.take()[1:]
            self.take(":")
            while self.peek() not in ("=", ")", None) and self.peek_kind() != "var":
                self.take()
            if self.peek() == "=":
                self.take()
                default = self.value()
                self.variables.setdefault(name, default)
        self.take(")")

    def selection_set(self) -> list[Field | _Spread]:
        self.take("{")
        selections: list[Field | _Spread] = []
        while self.peek() != "}":
            if self.peek() == "...":
                selections.extend(self.fragment_use())
            else:
                selections.append(self.field())
        self.take("}")
        return selections

    def fragment_use(self) -> list[Field | _Spread]:
        self.take("...")
        if self.peek() == "on":  # inline fragment: every node of a connection has one type here
            self.take()
            self.take()
        elif self.peek() not in ("{", "@"):
            spread = _Spread(self.take())
            self.skip_directives()
            return [spread]
        self.skip_directives()
        return self.selection_set()

    def field(self) -> Field:
        name, alias = self.take(), None
        if self.peek() == ":":
            self.take()
            alias, name = name, self.take()
        args = self.arguments() if self.peek() == "(" else {}
        self.skip_directives()
        subs = self.selection_set() if self.peek() == "{" else None
        return Field(name, alias, args, subs)  # type: ignore[arg-type]  # spreads resolved later

    def arguments(self) -> dict[str, Any]:
        self.take("(")
        args: dict[str, Any] = {}
        while self.peek() != ")":
            name = self.take()
            self.take(":")
            args[name] = self.value()
        self.take(")")
        return args

    def value(self) -> Any:
        kind, text = self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")
        self.take()
        if kind == "var":
            return self.variables.get(text[1:])
        if kind == "string":
            return json.loads(text)  # GraphQL string escapes are JSON's
        if kind == "block":
            return text[3:-3]
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if text == "[":
            return self._list_value()
        if text == "{":
            return self._object_value()
        return {"true": True, "false": False, "null": None}.get(text, text)  # else an enum value

    def _list_value(self) -> list[Any]:
        items = []
        while self.peek() != "]":
            items.append(self.value())
        self.take("]")
        return items

    def _object_value(self) -> dict[str, Any]:
        obj = {}
        while self.peek() != "}":
            key = self.take()
            self.take(":")
            obj[key] = self.value()
        self.take("}")
        return obj

    def skip_directives(self) -> None:
        while self.peek() == "@":
            self.take()
            self.take()
            if self.peek() == "(":
                self.arguments()

    def resolve(self, selections: list[Field | _Spread], depth: int) -> list[Field]:
        """Replace named fragment spreads by their fields, recursively."""
        if depth > 30:
            raise GraphQLError("Fragments are nested too deeply (or are cyclic)")
        fields: list[Field] = []
        for item in selections:
            if isinstance(item, _Spread):
                if item.fragment not in self.fragments:
                    raise GraphQLError(f"Fragment {item.fragment} was used, but not defined")
                fields.extend(self.resolve(self.fragments[item.fragment], depth + 1))
            else:
                raw: list[Field | _Spread] | None = item.selections  # type: ignore[assignment]
                subs = None if raw is None else self.resolve(raw, depth + 1)
                fields.append(Field(item.name, item.alias, item.args, subs))
        return fields


def parse_operation(source: str, variables: dict[str, Any] | None = None,
                    operation_name: str | None = None) -> tuple[str, list[Field]]:
    """The kind (query or mutation) and root fields of the chosen operation, with variables
    substituted into arguments."""
    return _Parser(source, variables or {}).document(operation_name)


def parse_query(source: str, variables: dict[str, Any] | None = None,
                operation_name: str | None = None) -> list[Field]:
    """The root fields of the chosen query operation (a mutation is a GraphQLError here)."""
    kind, roots = parse_operation(source, variables, operation_name)
    if kind != "query":
        raise GraphQLError(f"Expected a query, got a {kind}")
    return roots


def project(value: Any, selections: list[Field] | None) -> Any:
    """Keep only what the query selected (GraphQL answers exactly the shape that was asked)."""
    if selections is None or value is None:
        return value
    if isinstance(value, list):
        return [project(item, selections) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for f in selections:
        out[f.key] = value.get("__typename") if f.name == "__typename" else project(value.get(f.name), f.selections)
    return out


# =============================================================================================
# Query cost (documented model) and the leaky bucket
# =============================================================================================
def field_cost(f: Field) -> int:
    """Requested cost: scalars 0, objects 1, connections 2 + page size x one item's cost."""
    if f.selections is None or f.name == "pageInfo":
        return 0
    size = f.args.get("first") or f.args.get("last")
    if isinstance(size, int):
        return 2 + size * item_cost(f.selections)
    return 1 + sum(field_cost(child) for child in f.selections)


def item_cost(connection_fields: list[Field]) -> int:
    # `edges { node }` and `nodes` describe the same items, so the dearer of the two is charged once.
    costs = [1]
    for child in connection_fields:
        if child.name == "nodes" and child.selections is not None:
            costs.append(1 + sum(field_cost(c) for c in child.selections))
        if child.name == "edges" and child.selections is not None:
            costs += [1 + sum(field_cost(c) for c in node.selections or [])
                      for node in child.selections if node.name == "node"]
    return max(costs)


@dataclass
class CostBucket:
    """Shopify's leaky bucket: a query needs its requested cost available; refills continuously."""

    maximum_available: float = 2000.0
    restore_rate: float = 100.0
    available: float = -1.0
    _updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.available < 0:
            self.available = self.maximum_available

    def refill(self) -> None:
        now = time.monotonic()
        self.available = min(self.maximum_available, self.available + (now - self._updated) * self.restore_rate)
        self._updated = now

    def try_spend(self, requested: int) -> bool:
        self.refill()
        if requested > self.available:
            return False
        self.available -= requested
        return True

    def refund(self, amount: float) -> None:
        self.available = min(self.maximum_available, self.available + max(0.0, amount))

    def status(self, currently_available: float | None = None) -> dict[str, float]:
        current = self.available if currently_available is None else currently_available
        return {"maximumAvailable": float(self.maximum_available),
                "currentlyAvailable": float(round(current, 1)),
                "restoreRate": float(self.restore_rate)}


# =============================================================================================
# Search-query filter, cursors, timestamps
# =============================================================================================
_FILTER_TERM = re.compile(r"""(updated_at|created_at):(>=|<=|>|<)?\s*(?:'([^']*)'|"([^"]*)"|(\S+))""")
_COMPARE = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, "": lambda a, b: a == b}


def parse_time(value: str | datetime) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(value: str | datetime | None) -> str:
    """Shopify's DateTime format: UTC, second precision, a trailing Z."""
    moment = datetime.now(UTC) if value is None else parse_time(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def search_filters(query: str | None) -> list[tuple[str, str, datetime]]:
    """`updated_at:>'2024-01-01T00:00:00Z' AND created_at:<=2024-02-01` → comparable terms.

    Only the date terms are understood; other search terms are ignored (they match everything).
    """
    terms = []
    for name, op, quoted1, quoted2, bare in _FILTER_TERM.findall(query or ""):
        raw = quoted1 or quoted2 or bare
        try:
            terms.append(({"updated_at": "updatedAt", "created_at": "createdAt"}[name], op, parse_time(raw)))
        except ValueError as exc:
            raise GraphQLError(f"Invalid date in search query: {raw!r}") from exc
    return terms


def matches(record: dict[str, Any], terms: list[tuple[str, str, datetime]]) -> bool:
    return all(_COMPARE[op](parse_time(record[attr]), moment) for attr, op, moment in terms)


def encode_cursor(sort_value: Any, numeric_id: int) -> str:
    # Shaped like Shopify's opaque cursors (base64 of {"last_id", "last_value"}).
    raw = json.dumps({"last_id": numeric_id, "last_value": sort_value}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return data["last_value"], int(data["last_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphQLError("Invalid cursor for current pagination sort.", "BAD_REQUEST") from exc


def numeric_id(record: dict[str, Any]) -> int:
    return int(record["id"].rsplit("/", 1)[1])


def sort_value(record: dict[str, Any], sort_key: str) -> Any:
    attr = _SORT_FIELDS.get(sort_key)
    return iso(record[attr]) if attr else numeric_id(record)


def money(amount: str | float, currency: str) -> dict[str, Any]:
    bag = {"amount": str(amount), "currencyCode": currency}
    return {"__typename": "MoneyBag", "shopMoney": dict(bag), "presentmentMoney": dict(bag)}


def as_connection(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """A nested (unpaginated) connection, e.g. an order's lineItems."""
    edges = [{"cursor": encode_cursor(numeric_id(n), numeric_id(n)), "node": n} for n in nodes]
    return {"edges": edges, "nodes": nodes,
            "pageInfo": {"hasNextPage": False, "hasPreviousPage": False,
                         "startCursor": edges[0]["cursor"] if edges else None,
                         "endCursor": edges[-1]["cursor"] if edges else None}}


# =============================================================================================
# Pagination over one connection
# =============================================================================================
@dataclass
class Page:
    records: list[dict[str, Any]]
    cursors: list[str]
    has_next: bool
    has_previous: bool

    def as_connection(self, typename: str) -> dict[str, Any]:
        edges = [{"cursor": c, "node": r} for c, r in zip(self.cursors, self.records)]
        return {"__typename": typename, "edges": edges, "nodes": self.records,
                "pageInfo": {"hasNextPage": self.has_next, "hasPreviousPage": self.has_previous,
                             "startCursor": self.cursors[0] if self.cursors else None,
                             "endCursor": self.cursors[-1] if self.cursors else None}}


def paginate(records: list[dict[str, Any]], args: dict[str, Any]) -> Page:
    """Relay pagination: filter by `query`, order by `sortKey`/`reverse`, cut at cursors, then page."""
    sort_key, reverse = args.get("sortKey") or "ID", bool(args.get("reverse"))
    terms = search_filters(args.get("query"))
    keyed = sorted(((sort_value(r, sort_key), numeric_id(r), r) for r in records if matches(r, terms)),
                   key=lambda k: (k[0], k[1]), reverse=reverse)
    total = len(keyed)
    if args.get("after"):
        keyed = [k for k in keyed if _beyond(k, decode_cursor(args["after"]), reverse)]
    items_before_window = len(keyed) < total
    remaining = len(keyed)
    if args.get("before"):
        keyed = [k for k in keyed if _beyond(decode_cursor(args["before"]), k, reverse)]
    items_after_window = len(keyed) < remaining
    first, last = args.get("first"), args.get("last")
    page = keyed[:first] if first is not None else keyed
    page = page[-last:] if last is not None and last > 0 else page
    return Page(records=[k[2] for k in page], cursors=[encode_cursor(k[0], k[1]) for k in page],
                has_next=items_after_window or (first is not None and len(keyed) > first),
                has_previous=items_before_window or (last is not None and len(keyed) > last))


def _beyond(item: tuple[Any, ...], cursor: tuple[Any, ...], reverse: bool) -> bool:
    """True when `item` comes after `cursor` in the current ordering."""
    if type(item[0]) is not type(cursor[0]):
        raise GraphQLError("Invalid cursor for current pagination sort.", "BAD_REQUEST")
    return (item[0], item[1]) < (cursor[0], cursor[1]) if reverse else (item[0], item[1]) > (cursor[0], cursor[1])


def check_connection_args(name: str, args: dict[str, Any]) -> None:
    """The static checks Shopify makes before running (and charging for) a query."""
    first, last = args.get("first"), args.get("last")
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last", path=[name])
    if any(isinstance(n, int) and n > MAX_PAGE_SIZE for n in (first, last)):
        raise GraphQLError(f"{'first' if first else 'last'} cannot exceed {MAX_PAGE_SIZE}. To query larger "
                           "amounts of data with fewer limits, bulk operations should be used instead.", path=[name])
    sort_key = args.get("sortKey")
    enum_name, _, valid = SORT_KEYS[name]
    if sort_key is not None and sort_key not in valid:
        raise GraphQLError(f"Argument 'sortKey' on Field '{name}' has an invalid value ({sort_key}). "
                           f"Expected type '{enum_name}'.", "argumentLiteralsIncompatible", [name])


# =============================================================================================
# The emulator
# =============================================================================================
_PATH = re.compile(r"/admin/api/(?P<version>\d{4}-\d{2}|unstable)/graphql\.json")
_ROOT_TYPES = {"customers": "CustomerConnection", "orders": "OrderConnection",
               "abandonedCheckouts": "AbandonedCheckoutConnection"}
_SINGLE_ROOTS = {"customer": "customers", "order": "orders"}
# Fields an API version lacks are GraphQL errors there, as on Shopify: a customer's email and phone
# with their marketing state arrived in 2025-04.
_FIELDS_SINCE = {"defaultEmailAddress": "2025-04", "defaultPhoneNumber": "2025-04"}


class ShopifyEmulator(EmulatorServer):
    """In-memory shop behind a real HTTP GraphQL Admin endpoint."""

    def __init__(self, valid_tokens: set[str] | None = None, *, shop_domain: str = "herald-test.myshopify.com",
                 maximum_available: float = 2000.0, restore_rate: float = 100.0, currency: str = "USD",
                 app_secret: str = "shpss_test_webhook_secret") -> None:
        super().__init__()
        # The app's webhook subscriptions, and the client secret Shopify signs their deliveries with.
        self.webhooks = WebhookRegistry(shop_domain, app_secret)
        self.valid_tokens: set[str] = set(valid_tokens) if valid_tokens is not None else {"shpat_test_token"}
        self.shop_domain = shop_domain
        self.currency = currency
        self.bucket = CostBucket(maximum_available, restore_rate)
        self._records: dict[str, list[dict[str, Any]]] = {name: [] for name in CONNECTIONS}
        self._ids = itertools.count(1_000_001)  # Shopify ids are large numbers; unique across types here
        self._order_numbers = itertools.count(1001)  # what merchants see: "#1001", "#1002", ...
        self._forced_throttles = 0

    # -- knobs -------------------------------------------------------------------------------
    def throttle_next(self, n: int = 1) -> None:
        """Answer the next n GraphQL calls with THROTTLED (HTTP 200) without touching the real bucket."""
        with self.lock:
            self._forced_throttles += n

    def drain_bucket(self, to: float = 0.0) -> None:
        """Empty the cost bucket so the next calls throttle naturally until it refills."""
        with self.lock:
            self.bucket.refill()
            self.bucket.available = to

    @property
    def shop(self) -> dict[str, Any]:
        return {"__typename": "Shop", "id": "gid://shopify/Shop/1", "name": "Herald Test Shop",
                "myshopifyDomain": self.shop_domain, "email": f"owner@{self.shop_domain}",
                "currencyCode": self.currency, "ianaTimezone": "UTC",
                "primaryDomain": {"url": f"https://{self.shop_domain}", "host": self.shop_domain}}

    # -- data helpers ------------------------------------------------------------------------
    def _gid(self, typename: str) -> tuple[str, int]:
        number = next(self._ids)
        return f"gid://shopify/{typename}/{number}", number

    def _store(self, connection: str, record: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._records[connection].append(record)
            return copy.deepcopy(record)

    def _find(self, connection: str, ref: str | dict[str, Any] | None) -> dict[str, Any] | None:
        if ref is None:
            return None
        gid = ref if isinstance(ref, str) else ref["id"]
        with self.lock:
            found = next((r for r in self._records[connection] if r["id"] == gid), None)
        if found is None:
            raise KeyError(f"no {connection} record {gid}")
        return found

    def add_customer(self, *, email: str | None = None, phone: str | None = None, first_name: str | None = None,
                     last_name: str | None = None, created_at: str | datetime | None = None,
                     updated_at: str | datetime | None = None, email_marketing: bool = True,
                     sms_marketing: bool = False, tags: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        """Add a customer; returns a copy of the node (its `id` is the GID). `extra` sets raw camelCase fields."""
        gid, number = self._gid("Customer")
        created = iso(created_at)
        record = {"__typename": "Customer", "id": gid, "legacyResourceId": str(number),
                  "firstName": first_name, "lastName": last_name,
                  "displayName": " ".join(p for p in (first_name, last_name) if p) or email or phone or "",
                  "email": email, "phone": phone, "verifiedEmail": email is not None, "state": "ENABLED",
                  "locale": "en", "note": None, "tags": list(tags or []),
                  "defaultEmailAddress": _contact_point("emailAddress", email, email_marketing),
                  "defaultPhoneNumber": _contact_point("phoneNumber", phone, sms_marketing),
                  "emailMarketingConsent": _consent(email, email_marketing, created),
                  "smsMarketingConsent": _consent(phone, sms_marketing, created),
                  "defaultAddress": None, "createdAt": created, "updatedAt": iso(updated_at or created), **extra}
        return self._store("customers", record)

    def add_order(self, *, customer: str | dict[str, Any] | None = None, total: str | float = "10.00",
                  currency: str | None = None, email: str | None = None, line_items: list[dict[str, Any]] | None = None,
                  created_at: str | datetime | None = None, updated_at: str | datetime | None = None,
                  financial_status: str = "PAID", **extra: Any) -> dict[str, Any]:
        """Add an order, optionally for a customer (GID or the dict add_customer returned)."""
        owner = self._find("customers", customer)
        gid, number = self._gid("Order")
        created, cur = iso(created_at), currency or self.currency
        record = {"__typename": "Order", "id": gid, "legacyResourceId": str(number),
                  "name": f"#{next(self._order_numbers)}",
                  "email": email or (owner or {}).get("email"), "phone": (owner or {}).get("phone"),
                  "createdAt": created, "processedAt": created, "updatedAt": iso(updated_at or created),
                  "cancelledAt": None, "closedAt": None, "test": False, "sourceName": "web", "tags": [],
                  "displayFinancialStatus": financial_status, "displayFulfillmentStatus": "UNFULFILLED",
                  "currencyCode": cur, "totalPriceSet": money(total, cur), "subtotalPriceSet": money(total, cur),
                  "totalTaxSet": money("0.00", cur), "totalDiscountsSet": money("0.00", cur),
                  "customer": owner, "lineItems": self._line_items(line_items, total, cur), **extra}
        return self._store("orders", record)

    def add_abandoned_checkout(self, *, customer: str | dict[str, Any] | None = None, total: str | float = "10.00",
                               currency: str | None = None, line_items: list[dict[str, Any]] | None = None,
                               created_at: str | datetime | None = None,
                               updated_at: str | datetime | None = None, **extra: Any) -> dict[str, Any]:
        """Add an abandoned checkout. Like Shopify's object it has no email/phone: those live on `customer`."""
        owner = self._find("customers", customer)
        gid, _ = self._gid("AbandonedCheckout")
        created, cur = iso(created_at), currency or self.currency
        record = {"__typename": "AbandonedCheckout", "id": gid, "name": f"#{next(self._order_numbers)}",
                  "abandonedCheckoutUrl": f"https://{self.shop_domain}/checkouts/ac/{secrets.token_hex(8)}/recover",
                  "createdAt": created, "updatedAt": iso(updated_at or created), "completedAt": None,
                  "customer": owner, "discountCodes": [], "note": "", "taxesIncluded": False,
                  "billingAddress": None, "shippingAddress": None, "customAttributes": [],
                  "totalPriceSet": money(total, cur), "subtotalPriceSet": money(total, cur),
                  "lineItems": self._line_items(line_items, total, cur), **extra}
        return self._store("abandonedCheckouts", record)

    def _line_items(self, items: list[dict[str, Any]] | None, total: str | float, currency: str) -> dict[str, Any]:
        items = items or [{"title": "Item", "quantity": 1, "price": total}]
        nodes = []
        for item in items:
            gid, _ = self._gid("LineItem")
            nodes.append({"__typename": "LineItem", "id": gid, "title": item.get("title", "Item"),
                          "quantity": item.get("quantity", 1), "sku": item.get("sku"),
                          "originalUnitPriceSet": money(item.get("price", total), currency),
                          "product": {"id": item.get("product_id", "gid://shopify/Product/1")}})
        return as_connection(nodes)

    def update_record(self, gid: str, *, updated_at: str | datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Change any record's raw fields and bump its updatedAt (to now unless given)."""
        connection = _connection_of(gid)
        record = self._find(connection, gid)
        assert record is not None
        with self.lock:
            record.update(fields)
            record["updatedAt"] = iso(updated_at)
            return copy.deepcopy(record)

    def records(self, connection: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._records[connection])

    # -- call accounting ---------------------------------------------------------------------
    def call_count(self, connection: str | None = None) -> int:
        """GraphQL requests received (injected faults included); only those asking `connection` if given."""
        return len(self.arguments_seen(connection)) if connection else len(self.requests_to("/graphql.json"))

    def arguments_seen(self, connection: str) -> list[dict[str, Any]]:
        """The resolved arguments of `connection` in every request that asked for it, oldest first."""
        seen = []
        for request in self.requests_to("/graphql.json"):
            body = request.json if isinstance(request.json, dict) else {}
            try:
                roots = parse_query(body.get("query") or "", body.get("variables") or {}, body.get("operationName"))
            except GraphQLError:
                continue
            seen += [f.args for f in roots if f.name == connection]
        return seen

    # -- webhook subscriptions ------------------------------------------------------------------
    def subscriptions(self) -> list[dict[str, Any]]:
        """The app's webhook subscriptions now (id, topic, uri, format, ...)."""
        with self.lock:
            return self.webhooks.subscriptions()

    def deliver(self, topic: str, payload: dict[str, Any], *, event_id: str | None = None,
                rewrite: tuple[str, str] | None = None) -> list[Delivery]:
        """Send an event to every subscription of its topic, as Shopify does (see shopify_webhooks)."""
        return self.webhooks.deliver(topic, payload, event_id=event_id, rewrite=rewrite)

    def redeliver(self, delivery: Delivery) -> Delivery:
        return self.webhooks.redeliver(delivery)

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return json_response({"errors": "Not Found"}, 404)
        if request.method != "POST":
            return json_response({"errors": "Not Found"}, 404)
        if request.headers.get("X-Shopify-Access-Token") not in self.valid_tokens:
            return json_response(INVALID_TOKEN_BODY, 401)
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return json_response({"errors": {"query": "Required parameter missing or invalid"}}, 400)
        raw_variables = body.get("variables")
        variables: dict[str, Any] = raw_variables if isinstance(raw_variables, dict) else {}
        with self.lock:
            result = self.execute(body["query"], variables, body.get("operationName"), version=match["version"])
        return json_response(result, 200, {"X-Shopify-API-Version": match["version"],
                                           "X-Request-Id": secrets.token_hex(16)})

    def rate_limited_response(self, retry_after: float) -> Response:
        # Shopify sends Retry-After as a float string ("2.0"), which strict int parsers reject.
        message = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
        return json_response({"errors": message}, 429, {"Retry-After": _seconds(retry_after)})

    # -- GraphQL execution (called with the lock held) ----------------------------------------------
    def execute(self, query: str, variables: dict[str, Any], operation_name: str | None = None,
                version: str = "2025-10") -> dict[str, Any]:
        try:
            kind, roots = parse_operation(query, variables, operation_name)
            for root in roots:
                self._check_root(root, kind, version)
        except GraphQLError as error:
            return {"errors": [error.as_dict()]}
        requested = sum(self._root_cost(root, kind) for root in roots)
        if requested > SINGLE_QUERY_MAX_COST:
            return {"errors": [{"message": f"Query cost is {requested}, which exceeds the single query max cost "
                                           f"limit ({SINGLE_QUERY_MAX_COST}).",
                                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested,
                                               "maxCost": SINGLE_QUERY_MAX_COST}}]}
        throttled = self._throttle_check(requested)
        if throttled is not None:
            return throttled
        return self._run(roots, requested, kind, version)

    def _check_root(self, root: Field, kind: str = "query", version: str = "2025-10") -> None:
        if kind == "mutation":
            return  # checked as it runs: its errors depend on its arguments
        if root.name in CONNECTIONS:
            check_connection_args(root.name, root.args)
            _check_version(root, version)
        elif root.name not in ("shop", "__typename", "webhookSubscriptions", *_SINGLE_ROOTS):
            raise GraphQLError(f"Field '{root.name}' doesn't exist on type 'QueryRoot'", "undefinedField", [root.key])

    def _root_cost(self, root: Field, kind: str = "query") -> int:
        if kind == "mutation":
            return MUTATION_COST
        if root.name in (*CONNECTIONS, "webhookSubscriptions"):
            return field_cost(root)
        return 1 + sum(field_cost(c) for c in root.selections or [])

    def _throttle_check(self, requested: int) -> dict[str, Any] | None:
        if self._forced_throttles > 0:
            self._forced_throttles -= 1
            return self._throttled(requested, currently_available=min(self.bucket.available, requested / 2))
        if not self.bucket.try_spend(requested):
            return self._throttled(requested)
        return None

    def _throttled(self, requested: int, currently_available: float | None = None) -> dict[str, Any]:
        self.bucket.refill()
        return {"errors": [{"message": "Throttled",
                            "extensions": {"code": "THROTTLED",
                                           "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": None,
                                        "throttleStatus": self.bucket.status(currently_available)}}}

    def _run(self, roots: list[Field], requested: int, kind: str = "query", version: str = "2025-10") -> dict[str, Any]:
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        actual = 0
        for root in roots:
            try:
                if kind == "mutation":
                    data[root.key], cost = self.webhooks.resolve_mutation(root, version), MUTATION_COST
                elif root.name == "webhookSubscriptions":
                    data[root.key], cost = self.webhooks.resolve_query(root, version)
                else:
                    data[root.key], cost = self._resolve_root(root)
                actual += cost
            except WebhookGraphQLError as error:
                return {"errors": [{"message": str(error), "path": [root.key]}]}
            except GraphQLError as error:
                data[root.key] = None
                error.path = error.path or [root.key]
                errors.append(error.as_dict())
        self.bucket.refund(requested - actual)  # Shopify charges the requested cost, then refunds the rest
        result: dict[str, Any] = {"data": data}
        if errors:
            result["errors"] = errors
        result["extensions"] = {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                                         "throttleStatus": self.bucket.status()}}
        return result

    def _resolve_root(self, root: Field) -> tuple[Any, int]:
        if root.name == "__typename":
            return "QueryRoot", 0
        if root.name == "shop":
            return project(self.shop, root.selections), self._root_cost(root)
        if root.name in _SINGLE_ROOTS:
            wanted = root.args.get("id")
            found = next((r for r in self._records[_SINGLE_ROOTS[root.name]] if r["id"] == wanted), None)
            return project(found, root.selections), self._root_cost(root)
        page = paginate(self._records[root.name], root.args)
        per_item = item_cost(root.selections or [])
        return project(page.as_connection(_ROOT_TYPES[root.name]), root.selections), 2 + len(page.records) * per_item


def _check_version(root: Field, version: str) -> None:
    pending = list(root.selections or [])
    while pending:
        item = pending.pop()
        since = _FIELDS_SINCE.get(item.name)
        if since is not None and version != "unstable" and version < since:
            raise GraphQLError(f"Field '{item.name}' doesn't exist on type 'Customer'", "undefinedField", [root.key])
        pending.extend(item.selections or [])


def _contact_point(attr: str, value: str | None, subscribed: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    return {attr: value, "marketingState": "SUBSCRIBED" if subscribed else "NOT_SUBSCRIBED"}


def _consent(address: str | None, subscribed: bool, at: str) -> dict[str, Any] | None:
    if address is None:
        return None
    return {"marketingState": "SUBSCRIBED" if subscribed else "NOT_SUBSCRIBED",
            "marketingOptInLevel": "SINGLE_OPT_IN" if subscribed else None,
            "consentUpdatedAt": at if subscribed else None}


def _connection_of(gid: str) -> str:
    typename = gid.split("/")[-2]
    return {"Customer": "customers", "Order": "orders", "AbandonedCheckout": "abandonedCheckouts"}[typename]
