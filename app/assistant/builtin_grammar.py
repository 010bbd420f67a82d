"""What the built-in assistant understands of a merchant's message, as plain data.

`parse(text, now)` answers one of: `DraftRequest` ("email|text|... <who> [when they did it]
[about <topic>] [saying "<message>"] [, <send time>]"), `FlowRequest` ("remind people who abandoned
checkout after 1 hour", "thank customers after every order": a flow definition in the API's JSON,
also had from `flow_definition(text)`), `CountRequest` ("how many orders this week?"),
`PreviewRequest` ("preview <who>", "how many people would get ...") or `NotUnderstood`. The README
section "The built-in assistant" documents this grammar: change both together.

Matching is on lower-cased text without accents; every recognised phrase is blanked out in place (so
positions, and with them the order of the conditions, survive), and whatever is left must be filler
words. A word the grammar does not know makes the request `NotUnderstood`, saying which words, rather
than silently widening the audience to everyone; so does a name that fits several countries. Time
windows are rolling (this week = the last 7 days, a month = 30 days) because that is what
`withinDays` and `withinHours` express; send times are UTC because the merchant's zone is unknown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.assistant.builtin_copy import channel_config, copy_for
from app.assistant.countries import countries, plain
from app.assistant.tools import DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS
from app.services.audience_sql import MAX_WITHIN_HOURS

LAPSED_DAYS = 90  # "lapsed customers" with no window: bought before, but not in the last 90 days
MAX_FLOW_DELAY = timedelta(days=365)


def _re(pattern: str) -> re.Pattern[str]:
    """A pattern written with single spaces that match any run of whitespace."""
    return re.compile(pattern.replace(" ", r"\s+"))


def _unnamed(pattern: str) -> str:
    """The pattern with its named groups unnamed, to be one alternative among others that name theirs."""
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


# --- Results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """A rolling time window, in hours: whole days become `withinDays`, anything else `withinHours`."""

    hours: int

    def condition(self) -> dict[str, int]:
        return {"withinDays": self.hours // 24} if self.hours % 24 == 0 else {"withinHours": self.hours}

    def __str__(self) -> str:
        if self.hours % 24 == 0:
            return period(self.hours // 24)
        return "in the last hour" if self.hours == 1 else f"in the last {self.hours} hours"


@dataclass(frozen=True)
class EventCondition:
    event: str
    negate: bool = False
    min_count: int = 1
    where: tuple[tuple[str, str, Any], ...] = ()  # (property, operator or "eq", value): the event's `where`
    ever: bool = False  # not bound by the window: "bought before, but not in the last 90 days"

    def condition(self, window: Window | None) -> dict[str, Any]:
        condition: dict[str, Any] = {"type": "event", "event": self.event}
        if window and not self.ever:
            condition.update(window.condition())
        if self.min_count > 1:
            condition["minCount"] = self.min_count
        if self.negate:
            condition["negate"] = True
        if self.where:
            condition["where"] = where_json(self.where)
        return condition


def where_json(where: tuple[tuple[str, str, Any], ...]) -> dict[str, Any]:
    """The audience grammar's event `where`: {"value": {"gt": 100}, "currency": "EUR"}."""
    found: dict[str, Any] = {}
    for key, op, value in where:
        if op == "eq":
            found[key] = value
        else:
            found.setdefault(key, {})[op] = value
    return found


@dataclass(frozen=True)
class Audience:
    name: str = "Everyone"
    countries: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()  # "outside the US": a known country, not these
    events: tuple[EventCondition, ...] = ()
    theme: str = "news"  # which default copy fits them
    window: Window | None = None

    def definition(self, channels: tuple[str, ...] = ()) -> dict[str, Any]:
        """The SPEC §6 audience definition; consent to the channels when there are any."""
        conditions = self.place_conditions() + [event.condition(self.window) for event in self.events]
        consents: list[dict[str, Any]] = [{"type": "consent", "channel": channel} for channel in channels]
        if len(consents) > 1:
            consents = [{"type": "group", "match": "any", "conditions": consents}]
        return {"match": "all", "conditions": conditions + consents}

    def place_conditions(self) -> list[dict[str, Any]]:
        conditions: list[dict[str, Any]] = []
        if self.countries:
            many = len(self.countries) > 1
            conditions.append({"type": "attribute", "field": "country", "op": "in" if many else "eq",
                               "value": list(self.countries) if many else self.countries[0]})
        if self.excluded:
            conditions.append({"type": "attribute", "field": "country", "op": "exists"})
            conditions.extend({"type": "attribute", "field": "country", "op": "neq", "value": code}
                              for code in self.excluded)
        return conditions


@dataclass(frozen=True)
class DraftRequest:
    channels: tuple[str, ...]
    audience: Audience
    send_at: datetime | None = None  # aware UTC; may be in the past, which the caller reports
    topic: str | None = None
    message: str | None = None  # quoted text, used verbatim as the message


@dataclass(frozen=True)
class FlowRequest:
    definition: dict[str, Any]  # the flow API's JSON (camelCase), for `flows.create`


@dataclass(frozen=True)
class CountRequest:
    metric: str  # an event type, "contacts" or "events"
    window_days: int


@dataclass(frozen=True)
class PreviewRequest:
    audience: Audience
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotUnderstood:
    reason: str | None = None


Request = DraftRequest | FlowRequest | CountRequest | PreviewRequest | NotUnderstood


def period(days: int) -> str:
    return "in the last day" if days == 1 else f"in the last {days} days"


# --- Vocabulary: numbers, windows, countries ----------------------------------------------------

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
            "thirty": 30, "sixty": 60, "ninety": 90, "once": 1, "twice": 2}
_N = rf"\d{{1,4}}|{'|'.join(sorted(_NUMBERS, key=len, reverse=True))}"
_UNIT_HOURS = {"hour": 1, "hr": 1, "h": 1, "day": 24, "d": 24, "week": 168, "wk": 168, "month": 720, "year": 8760,
               "yr": 8760}
_UNIT = r"(?P<unit>hours?|hrs?|h|days?|d|weeks?|wks?|months?|years?|yrs?)\b"
_WINDOWS = (
    _re(rf"\b(?:(?:in|over|within|during|for) )?(?:the )?(?:last|past|previous) (?:(?P<count>{_N})\s*)?{_UNIT}"),
    _re(rf"\bwithin (?:the )?(?P<count>{_N})\s*{_UNIT}"),
    _re(r"\b(?:(?:in|during) )?(?P<named>this week|this month|this year|today|yesterday|recently|lately)\b"),
)
_NAMED_DAYS = {"this week": 7, "this month": 30, "this year": 365, "today": 1, "yesterday": 2, "recently": 30,
               "lately": 30}
# "haven't ordered in 90 days": a window said right after a negation, without "last".
_NEG_WINDOW = (rf"(?: (?:in|for) (?:(?:over|more than) )?(?P<wcount>{_N})\s*"
               r"(?P<wunit>hours?|hrs?|days?|weeks?|months?|years?)\b)?")

_PEOPLE = r"customers|contacts|people|shoppers|subscribers|buyers|users|clients|audience|members|folks|visitors"
_COUNTRIES = countries()
_ALIAS = "|".join(re.escape(alias).replace(r"\ ", r"\s+") for alias in _COUNTRIES.aliases())
# Not after "new": "new mexico" is no country, and neither is "new jersey".
_NAME = rf"(?<![\w.])(?<!\bnew\s)(?:{_ALIAS})(?![\w])"
_LIST = rf"{_NAME}(?:(?:\s*,\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|\s*&\s*|\s*/\s*)(?:the\s+)?{_NAME})*"
_PLURALS = {f"{adjective}s": adjective for adjective in _COUNTRIES.adjectives
            if not adjective.endswith(("s", "sh", "ch", "x", "z", "ese"))}
_OUTSIDE = re.compile(r"\b(?:outside(?:\s+of)?|not\s+(?:in|from)|(?:except|excluding)(?:\s+(?:those|people|customers"
                      rf"|contacts))?(?:\s+(?:in|from))?)\s+(?:the\s+)?(?P<list>{_LIST})")
_BEFORE_PEOPLE = rf"(?=\s+(?:(?:lapsed|new|repeat|returning|past|previous|one-time|paying)\s+)?(?:{_PEOPLE})\b)"
_PLACES = (
    # Bare "us" is a country only as "the us" or before a noun ("bought from us" is no place).
    re.compile(r"\b(?:(?:who\s+(?:live|are|are\s+based|shop)|that\s+live|living|based|located)\s+)?(?:in|from)\s+"
               rf"(?:the\s+(?P<list>{_LIST})|(?!us(?![\w.]))(?P<bare>{_LIST}))"),
    re.compile(rf"(?<![\w.])(?P<list>{_LIST})(?:-based)?{_BEFORE_PEOPLE}"),
    re.compile(rf"(?<![\w.])(?P<list>{'|'.join(sorted(map(re.escape, _PLURALS), key=len, reverse=True))})(?![\w])"),
)


# --- Vocabulary: what people did ----------------------------------------------------------------

_NOT = (r"(?:didn'?t|did not|haven'?t|have not|hasn'?t|has not|never|don'?t|do not|doesn'?t|does not|not yet|yet to"
        r"|without|failed to|no longer)")
_BUY = (r"(?:buy|buys|bought|buying|purchas(?:e|es|ed|ing)|order(?:s|ed|ing)?|shopped|shop with us"
        r"|plac(?:e|es|ed|ing) (?:(?:an?|their|any|a new) )?orders?|mad?(?:e|ing) (?:a|any) purchases?"
        r"|complet(?:e|es|ed|ing) (?:(?:their|the|a|an|his|her) )?(?:purchase|order)s?"
        r"|finish(?:es|ed|ing)? (?:(?:their|the|a|an) )?(?:purchase|order)s?|check(?:s|ed|ing)? out)")
_BUY_PAST = r"(?:bought|purchased|ordered|placed (?:an? )?orders?|shopped(?: with us)?|made (?:a )?purchases?)"
_ADD = (r"add(?:s|ed|ing)? (?:(?:something|anything|items?|products?|it|them|stuff) )?to (?:(?:their|the|a|his|her) )?"
        r"(?:shopping )?(?:cart|basket)")
_START = r"(?:start(?:s|ed|ing)?|begin(?:s|ning)?|began|initiat(?:e|es|ed|ing)) (?:(?:a|the|their) )?checkouts?"
_VIEW = (r"(?:view(?:s|ed|ing)?|look(?:s|ed|ing)? at|brows(?:e|es|ed|ing)) (?:(?:a|any|the|our|some|a few) )?"
         r"(?:products?|items?)")
_VISIT = r"(?:visit(?:s|ed|ing)?|c[oa]me back)(?: (?:to )?(?:the|our|my) (?:store|site|website|shop))?"
_SIGNUP = (r"(?:sign(?:s|ed|ing)? up|join(?:s|ed|ing)?|register(?:s|ed|ing)?|creat(?:e|es|ed|ing) (?:an|their) "
           r"account|subscrib(?:e|es|ed|ing))")
_SINCE = r"(?: (?:something|anything|from us|with us|online|before|previously|in the past|at some point))*"
_TIMES = (rf"(?: (?:at least (?P<least>{_N})(?: times?)?|(?P<times>\d{{1,4}}|two|three|four|five|six|seven|eight|nine|ten)"
          rf"(?: or more)? times|more than (?P<over>{_N}) times"
          r"|(?P<more>more than once|again|twice|multiple times|several times|many times|repeatedly)"
          r"|(?P<once>(?:only|just|exactly) once|once only)))?")
_VALUE = (r"(?: (?:(?:worth|of|for|totall?ing|valued at) )?(?P<cmp>over|above|more than|greater than|under|below"
          r"|less than) (?P<cur>[$€£]\s*)?(?P<amount>\d{1,9}(?:\.\d{1,2})?)(?!\s*times?\b)"
          r"(?:\s*(?P<curword>dollars|euros|pounds|usd|eur|gbp)\b)?)?")
_VALUE_OPS = {"over": "gt", "above": "gt", "more than": "gt", "greater than": "gt", "under": "lt", "below": "lt",
              "less than": "lt"}
_CURRENCIES = {"€": "EUR", "euros": "EUR", "eur": "EUR", "£": "GBP", "pounds": "GBP", "gbp": "GBP", "usd": "USD"}


@dataclass(frozen=True)
class _Behaviour:
    label: str
    theme: str
    events: tuple[EventCondition, ...]
    patterns: tuple[re.Pattern[str], ...]
    lapsed: bool = False  # did it before, but not in the window (LAPSED_DAYS unless one is said)


def _b(label: str, theme: str, events: tuple[EventCondition, ...], *patterns: str, lapsed: bool = False) -> _Behaviour:
    return _Behaviour(label, theme, events, tuple(_re(pattern) for pattern in patterns), lapsed)


_ORDER, _NO_ORDER = EventCondition("order_placed"), EventCondition("order_placed", negate=True)
# Earlier entries win where phrases overlap ("didn't buy" before "buy").
_BEHAVIOURS = (
    _b("abandoned checkout", "abandoned", (EventCondition("checkout_started"), _NO_ORDER),
       r"\babandon(?:ed|s|ing)? (?:(?:their|a|the|his|her) )?checkouts?\b|\bcheckout abandoners\b"
       r"|\babandoned checkouts?\b|\bleft (?:(?:their|the) )?checkout\b|\bdropped off (?:at|during) checkout\b",
       rf"\b{_NOT} (?:complet(?:e|ed|ing)|finish(?:ed|ing)?) (?:(?:their|the|a) )?checkout\b"
       rf"|\b{_NOT} finish(?:ed|ing)? checking out\b"),
    _b("abandoned their cart", "abandoned", (EventCondition("added_to_cart"), _NO_ORDER),
       r"\babandon(?:ed|s|ing)? (?:(?:their|a|the|his|her) )?(?:shopping )?(?:carts?|baskets?)\b"
       r"|\b(?:cart|basket) abandoners\b|\babandoned (?:shopping )?(?:carts|baskets)\b",
       r"\b(?:left|leave|leaves|leaving|have|has|still have|with) (?:(?:some|any) )?(?:items?|products?|something"
       r"|things|stuff) (?:(?:still|sitting|left) )?in (?:(?:their|the|a|his|her) )?(?:shopping )?(?:carts?|baskets?)\b"),
    _b("lapsed", "winback", (EventCondition("order_placed", ever=True), _NO_ORDER),
       rf"\blapsed(?: (?:{_PEOPLE}|purchasers))?\b",
       rf"\b{_BUY_PAST}\b(?: (?:something|anything|from us|with us))*(?: (?:before|previously|in the past|at some point"
       r"|once))?,? but (?:not|haven'?t|have not|hasn'?t|has not)(?: (?:again|since|recently))?\b", lapsed=True),
    _b("didn't buy", "winback", (_NO_ORDER,),
       rf"\b{_NOT} (?:(?:yet|ever|again|still) )?(?:{_BUY}|check-?out)\b(?: (?:anything|something|a thing|again|yet"
       rf"|from us|with us))*{_NEG_WINDOW}",
       r"\bnon-?(?:buyers|purchasers|customers)\b|\bnever-?buyers\b"),
    _b("didn't add to cart", "browsed", (EventCondition("added_to_cart", negate=True),),
       rf"\b{_NOT} (?:(?:yet|ever|still) )?{_ADD}{_NEG_WINDOW}"),
    _b("didn't start checkout", "browsed", (EventCondition("checkout_started", negate=True),),
       rf"\b{_NOT} (?:(?:yet|ever|still) )?{_START}{_NEG_WINDOW}"),
    _b("didn't view a product", "news", (EventCondition("product_viewed", negate=True),),
       rf"\b{_NOT} (?:(?:yet|ever|still) )?{_VIEW}{_NEG_WINDOW}"),
    _b("didn't visit", "winback", (EventCondition("page_viewed", negate=True),),
       rf"\b{_NOT} (?:(?:yet|ever|still) )?{_VISIT}{_NEG_WINDOW}"),
    _b("bought", "thanks", (_ORDER,),
       rf"\b{_BUY}\b{_SINCE}{_VALUE}{_TIMES}",
       rf"\bwith (?:an? )?orders?{_VALUE}",
       r"\b(?P<repeat>repeat|returning) (?:customers|buyers|purchasers|shoppers|clients)\b",
       r"\b(?P<onetime>one-?time) (?:customers|buyers|purchasers|shoppers|clients)\b",
       r"\b(?:buyers|purchasers|past customers|previous customers|paying customers)\b"),
    _b("viewed a product", "browsed", (EventCondition("product_viewed"),),
       rf"\b{_VIEW}\b", r"\bbrowsed\b|\bbrowsers\b|\bproduct viewers\b"),
    _b("added to cart", "browsed", (EventCondition("added_to_cart"),), rf"\b{_ADD}\b"),
    _b("started checkout", "abandoned", (EventCondition("checkout_started"),), rf"\b{_START}\b"),
    _b("visited the store", "news", (EventCondition("page_viewed"),), rf"\b{_VISIT}\b", r"\b(?:site )?visitors\b"),
    _b("signed up", "welcome", (EventCondition("customer_created"),),
       rf"\b{_SIGNUP}\b", r"\bnew (?:customers|contacts|subscribers|sign-?ups|members|users|shoppers)\b"
       r"|\bsign-?ups\b|\bnewcomers\b"),
    _b("became a lead", "news", (EventCondition("lead"),), r"\bleads\b|\bbecame (?:a )?leads?\b"),
    # "bought at least 3 times but not in the last 90 days": the activity said just before, negated.
    _b("but not", "winback", (), r"\bbut not(?: (?:again|since|recently))?\b"),
)
# What each activity is called in "<did it> before but not in the last 30 days".
_DID = {"order_placed": "bought", "page_viewed": "visited", "product_viewed": "viewed a product",
        "added_to_cart": "added to cart", "checkout_started": "started checkout", "customer_created": "signed up",
        "lead": "became a lead"}
_FILLER = frozenset((
    "everyone", "everybody", "all", "any", "anyone", "anybody", "my", "our", "your", "the", "a", "an", "of",
    "customers", "customer", "contacts", "contact", "people", "person", "shoppers", "shopper", "subscribers",
    "subscriber", "users", "user", "clients", "client", "audience", "list", "who", "that", "which", "have", "has",
    "had", "did", "do", "does", "and", "but", "or", "yet", "to", "with", "them", "those", "these", "in", "from",
    "on", "at", "it", "is", "are", "were", "was", "ever", "send", "schedule", "for", "go", "out", "also", "members",
    "folks", "only", "just", "still", "targeting", "newsletter", "mailing", "their",
))

# --- Vocabulary: channels and requests ----------------------------------------------------------

_POLITE = (r"^\s*(?:(?:please|pls|can you|could you|would you|will you|let's|lets|i want to|i'd like to"
           r"|i would like to|we want to|we'd like to|help me|go ahead and|now),? )*")
_CHANNEL = r"e-?mail|text|sms|whatsapp|push|message|newsletter"
_ADJECTIVES = (r"(?P<adjectives>(?:(?:quick|short|new|special|promotional|promo|marketing|reminder|follow-?up"
               r"|win-?back|re-?engagement|thank-?you|welcome|personal|personali[sz]ed)[ -])*)")
_LEAD = _re(rf"{_POLITE}(?:(?:send|draft|create|write|get|receive|prepare|set up|shoot|blast|schedule|do)(?: out)? )?"
            rf"(?:(?:an?|the|our|my|some) )?{_ADJECTIVES}(?P<channels>(?:{_CHANNEL})"
            rf"(?:\s*(?:,|\band\b|&|\+|/)\s*(?:{_CHANNEL}))*)"
            r"(?: (?:messages?|notifications?|campaign|blast|newsletter|reminder|broadcast))?(?: (?:to|for))?\b")
# A verb with no channel: email unless one is named ("remind ... by text").
_VERB_LEAD = _re(rf"{_POLITE}(?P<verb>remind|nudge|ping|notify|contact|reach out to|follow up with|thank|welcome"
                 r"|win back|re-?engage|target)\b")
_VERB_THEMES = {"thank": "thanks", "welcome": "welcome", "win back": "winback", "re-engage": "winback",
                "reengage": "winback"}
_ADJECTIVE_THEMES = {"winback": "winback", "reengagement": "winback", "thankyou": "thanks", "welcome": "welcome"}
_VIA = _re(r"\b(?:on|via|by|over|through|using|with) (?:(?:an?|a) )?(?P<channel>e-?mail|text|sms|whatsapp|push)"
           r"(?: (?:messages?|notifications?))?\b")
_CHANNEL_TYPES = {"email": "email", "e-mail": "email", "newsletter": "email", "text": "sms", "sms": "sms",
                  "whatsapp": "whatsapp", "push": "push"}

_TIME = (_re(r"\b(?:at )?(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<meridiem>am|pm)\b"),
         _re(r"\bat (?:(?P<named>noon|midnight)|(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?)\b"))
# "today" names the send day only beside a clock time; elsewhere it is a time window ("who bought today").
_TODAY = _re(r"\b(?P<relative>today)\b")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = rf"(?P<month>{'|'.join(_MONTHS)})[a-z]*"
_DAYS = (_re(r"\b(?P<relative>tomorrow|tonight)\b"),
         _re(rf"\b(?:on )?(?:next )?(?P<weekday>{'|'.join(_WEEKDAYS)})\b"),
         _re(r"\b(?:on )?(?P<iso>\d{4}-\d{2}-\d{2})\b"),
         _re(rf"\bon (?:the )?{_MONTH} (?P<dom>\d{{1,2}})(?:st|nd|rd|th)?\b"),
         _re(rf"\bon (?:the )?(?P<dom>\d{{1,2}})(?:st|nd|rd|th)? (?:of )?{_MONTH}\b"))
DEFAULT_SEND_TIME, TONIGHT = time(9), time(19)

# A quoted message, with the words that introduce it ("saying", "with the message").
_QUOTED = re.compile(r"(?:\b(?:saying|that says|which says|that reads|reading|with the (?:message|text|words)"
                     r"|with (?:the )?(?:message|text))\s*:?\s*)?[\"“”«](?P<text>[^\"“”«»]+)[\"“”»]", re.IGNORECASE)
_TOPIC = _re(r"\babout (?P<topic>[^,;]+)")
_PREVIEW = _re(rf"{_POLITE}(?:preview|how (?:big|large) (?:is|would be)"
               r"|how many (?:people|customers|contacts) would (?:get|receive)(?: (?:it|this|that))?)\b:?")
_COUNT = _re(r"^\s*(?:so )?(?:how many|number of|count(?: of)?) (?P<noun>new customers|new contacts|new subscribers"
             r"|sign-?ups|orders|purchases|sales|checkouts?|product views|page views|visits|carts|leads|events"
             r"|customers|contacts|subscribers|people)\b")
_METRICS = {"orders": "order_placed", "purchases": "order_placed", "sales": "order_placed",
            "checkout": "checkout_started", "checkouts": "checkout_started", "product views": "product_viewed",
            "page views": "page_viewed", "visits": "page_viewed", "carts": "added_to_cart", "leads": "lead",
            "events": "events"}
_COUNT_FILLER = frozenset((
    "did", "do", "we", "i", "have", "had", "get", "got", "were", "there", "are", "is", "placed", "came", "come",
    "in", "so", "far", "total", "my", "our", "the", "store", "shop", "right", "now", "been",
))


# --- Parsing ------------------------------------------------------------------------------------

class _Text:
    """The lower-cased message, accents dropped, with recognised phrases blanked out in place."""

    def __init__(self, text: str) -> None:
        self.text = text

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.search(self.text)
        if match:
            self.text = self.text[:match.start()] + " " * (match.end() - match.start()) + self.text[match.end():]
        return match

    def take_all(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        found = []
        while match := self.take(pattern):
            found.append(match)
        return found

    def leftover(self, filler: frozenset[str]) -> list[str]:
        return [word for word in re.findall(r"[\w'-]+", self.text) if word not in filler]


def parse(text: str, now: datetime) -> Request:
    quotes = [match.group("text").strip() for match in _QUOTED.finditer(text)]
    lowered = _Text(plain(_QUOTED.sub(lambda match: " " * len(match.group(0)), text).replace("’", "'")))
    if lowered.take(_PREVIEW):
        return _preview(lowered)
    if count := lowered.take(_COUNT):
        return _count(count.group("noun"), lowered)
    if _is_flow(lowered.text):
        flow = _flow(lowered, quotes)
        return flow if isinstance(flow, NotUnderstood) else FlowRequest(flow)
    if len(quotes) > 1:
        return NotUnderstood("give the message in one pair of quotes.")
    return _draft(text, lowered, quotes[0] if quotes else None, now)


def _draft(text: str, lowered: _Text, message: str | None, now: datetime) -> Request:
    lead = lowered.take(_LEAD)
    verb = None if lead else lowered.take(_VERB_LEAD)
    if lead is None and verb is None:
        return NotUnderstood()
    channels = _channels(lead.group("channels") if lead else "", lowered) or ("email",)
    send_at = _send_time(lowered, now)
    if isinstance(send_at, NotUnderstood):
        return send_at
    topic = _original(text, lowered.take(_TOPIC), "topic")
    if not lowered.leftover(frozenset()):
        return NotUnderstood("who should get it? Say for example “email everyone”.")
    audience = _audience(lowered, theme=_lead_theme(lead, verb))
    if isinstance(audience, NotUnderstood):
        return audience
    return DraftRequest(channels, audience, send_at, topic, message)


def _lead_theme(lead: re.Match[str] | None, verb: re.Match[str] | None) -> str | None:
    """The copy a lead word asks for: "thank", "welcome", "win back", "a win-back email"."""
    if verb:
        return _VERB_THEMES.get(" ".join(verb.group("verb").split()))
    words = re.findall(r"[a-z-]+", lead.group("adjectives")) if lead else []
    return next((_ADJECTIVE_THEMES[key] for word in words if (key := word.replace("-", "")) in _ADJECTIVE_THEMES),
                None)


def _original(text: str, match: re.Match[str] | None, group: str) -> str | None:
    """The matched words as the merchant typed them (case kept) when lower-casing kept the length."""
    if match is None:
        return None
    source = text if len(text) == len(match.string) else match.string
    return source[match.start(group):match.end(group)].strip() or None


def _channels(said: str, text: _Text) -> tuple[str, ...]:
    named = [_CHANNEL_TYPES[word] for word in re.findall(_CHANNEL, said) if word != "message"]
    named.extend(_CHANNEL_TYPES[via.group("channel")] for via in text.take_all(_VIA))
    # A bare "message" means SMS unless a channel was named ("message US customers on WhatsApp").
    return tuple(dict.fromkeys(named or (["sms"] if said else [])))


def _preview(text: _Text) -> Request:
    lead = text.take(_LEAD)
    channels = _channels(lead.group("channels") if lead else "", text)
    audience = _audience(text)
    return audience if isinstance(audience, NotUnderstood) else PreviewRequest(audience, channels)


def _count(noun: str, text: _Text) -> Request:
    window = _window(text)
    if isinstance(window, NotUnderstood):
        return window
    metric = _METRICS.get(noun, "customer_created" if noun.startswith(("new", "sign")) else "contacts")
    if metric == "contacts" and text.leftover(_COUNT_FILLER):
        # "how many customers abandoned checkout this week?" is a question about an audience.
        audience = _audience(text, window or _NO_WINDOW)
        return audience if isinstance(audience, NotUnderstood) else PreviewRequest(audience)
    if leftover := text.leftover(_COUNT_FILLER):
        return NotUnderstood(f"I can't count by “{' '.join(leftover)}”.")
    if window and window.hours % 24:
        return NotUnderstood("I count in whole days: say e.g. “in the last 24 hours” or “today”.")
    return CountRequest(metric, min(window.hours // 24 if window else DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS))


_NO_WINDOW = Window(0)  # "the caller already looked for a window and found none"


# --- Audiences ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Found:
    """One behaviour said in the message, as conditions."""

    position: int
    behaviour: _Behaviour
    events: tuple[EventCondition, ...]
    label: str
    window: Window | None = None  # said with it: "haven't ordered in 90 days"


def _audience(text: _Text, window: Window | None = None, theme: str | None = None) -> Audience | NotUnderstood:
    if window is None:
        stated = _window(text)
        if isinstance(stated, NotUnderstood):
            return stated
        window = stated
    window = window or None  # _NO_WINDOW: none
    said = _places_and_behaviours(text, _FILLER)
    if isinstance(said, NotUnderstood):
        return said
    places, found = said
    if theme == "winback" and not found:  # "win back customers": those who bought before
        found = [_Found(0, _BEHAVIOURS[2], _BEHAVIOURS[2].events, "lapsed")]
    return _resolve(places, found, window, theme)


def _resolve(places: tuple[tuple[str, ...], tuple[str, ...]], found: list[_Found], window: Window | None,
             theme: str | None) -> Audience | NotUnderstood:
    attached = {each.window for each in found if each.window}
    if attached:
        if window or len(attached) > 1:
            return NotUnderstood("I can only apply one time window to an audience.")
        window = attached.pop()
    if window and not found:
        return NotUnderstood("a time window needs something people did in it (e.g. “who bought this week”); "
                             "to propose a send time, say e.g. “tomorrow at 9am”.")
    lapsed = any(each.behaviour.lapsed for each in found)
    if lapsed and window is None:
        window = Window(LAPSED_DAYS * 24)
    events = [event for each in found for event in each.events]
    labels = [each.label for each in found]
    if window and events and not any(not event.negate for event in events):
        # "haven't ordered in 90 days": they did it before, but not in the window.
        events = [shown for event in events for shown in ([EventCondition(event.event, ever=True), event]
                                                          if event.min_count == 1 else [event])]
        labels = [f"{_DID[event.event]} before but not" for event in events if event.negate]
        lapsed, theme = True, theme or "winback"
    elif lapsed:
        labels = ["bought before but not" if label == "lapsed" else label for label in labels]
    bounded = _unbounded_when_also_negated(events, window)
    if isinstance(bounded, NotUnderstood):
        return bounded
    events = bounded
    if again := {event.event for event in events if event.ever and not lapsed}:
        # "past customers who haven't ordered in 90 days": one "bought before but not" of the two.
        labels = [f"{each.label} before but not" if any(e.event in again and not e.negate for e in each.events)
                  else each.label for each in found
                  if not all(e.event in again and e.negate for e in each.events)]
        lapsed, theme = True, theme or "winback"
    countries_, excluded = places
    if window and window.hours > MAX_WITHIN_HOURS:
        window = Window(MAX_WITHIN_HOURS)
    name = _audience_name(countries_, excluded, labels, window, lapsed)
    first_theme = found[0].behaviour.theme if found else "news"
    return Audience(name, countries_, excluded, tuple(dict.fromkeys(events)), theme or first_theme, window)


def _unbounded_when_also_negated(events: list[EventCondition], window: Window | None
                                 ) -> list[EventCondition] | NotUnderstood:
    """Done and not done, both: the not-done takes the window, the done is any time before it."""
    negated = {event.event for event in events if event.negate and event.min_count == 1}
    if not negated & {event.event for event in events if not event.negate}:
        return events
    if window is None:
        return NotUnderstood("nobody can both have done something and not have done it; "
                             "add a time window, e.g. “bought before but not in the last 90 days”.")
    return [EventCondition(event.event, event.negate, event.min_count, event.where, ever=True)
            if not event.negate and event.event in negated else event for event in events]


def _audience_name(countries_: tuple[str, ...], excluded: tuple[str, ...], labels: list[str],
                   window: Window | None, lapsed: bool) -> str:
    if countries_:
        subject = f"{_joined(countries_)} contacts"
    elif excluded:
        subject = f"Contacts outside {_joined(excluded)}"
    else:
        subject = "Everyone"
    labels = list(dict.fromkeys(labels))
    if not labels:
        return subject
    if lapsed and window:
        labels = [f"{label} {window}" if label.endswith(" but not") else label for label in labels]
        return f"{subject} who {' and '.join(labels)}"
    return f"{subject} who {' and '.join(labels)}{f' {window}' if window else ''}"


def _joined(words: tuple[str, ...] | list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _places_and_behaviours(
        text: _Text, filler: frozenset[str]) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], list[_Found]] | NotUnderstood:
    """The countries and the behaviours said, once every other part of the request was taken: what
    is left must be `filler`, or the request is not understood."""
    places = _places(text)
    if isinstance(places, NotUnderstood):
        return places
    found = _behaviours(text)
    if isinstance(found, NotUnderstood):
        return found
    if leftover := text.leftover(filler):
        return NotUnderstood(f"I didn't understand “{' '.join(leftover)}”.")
    return places, found


def _behaviours(text: _Text) -> list[_Found] | NotUnderstood:
    """What people did, in the order the merchant said it."""
    matches = sorted((match.start(), index, match) for index, behaviour in enumerate(_BEHAVIOURS)
                     for pattern in behaviour.patterns for match in text.take_all(pattern))
    found: list[_Found] = []
    for position, index, match in matches:
        behaviour = _BEHAVIOURS[index]
        groups = match.groupdict()
        events, label = behaviour.events, behaviour.label
        if behaviour.label == "bought":
            events, label = _bought(groups)
        elif behaviour.label == "but not":
            before = [event for each in found for event in each.events if not event.negate]
            if not before:
                return NotUnderstood("“but not” needs something people did before it (e.g. “bought before but "
                                     "not in the last 90 days”).")
            events = (EventCondition(before[-1].event, negate=True),)
        window = _hours(groups["wcount"], groups["wunit"] or "") if groups.get("wcount") else None
        if isinstance(window, NotUnderstood):
            return window
        found.append(_Found(position, behaviour, events, label, window))
    return found


def _bought(groups: dict[str, str | None]) -> tuple[tuple[EventCondition, ...], str]:
    where = _where(groups)
    label = "bought" + (f" for {groups['cmp']} {groups['amount']}" if where else "")
    if groups.get("once") or groups.get("onetime"):  # exactly once: at least one order, not two
        return ((EventCondition("order_placed", where=where),
                 EventCondition("order_placed", negate=True, min_count=2, where=where)), f"{label} exactly once")
    minimum = _min_count(groups)
    if minimum > 1:
        label = f"{label} at least {minimum} times"
    return (EventCondition("order_placed", min_count=minimum, where=where),), label


def _where(groups: dict[str, str | None]) -> tuple[tuple[str, str, Any], ...]:
    """An order's value, as the audience grammar's `where` on the normalized `value` (and `currency`)."""
    if not groups.get("amount"):
        return ()
    amount_text = groups["amount"] or ""
    amount: float | int = float(amount_text) if "." in amount_text else int(amount_text)
    where: tuple[tuple[str, str, Any], ...] = (("value", _VALUE_OPS[" ".join((groups["cmp"] or "").split())], amount),)
    # "$" is many currencies: only the amount is compared, in whatever the store sells in.
    currency = _CURRENCIES.get((groups.get("cur") or "").strip()) or _CURRENCIES.get(groups.get("curword") or "")
    return (*where, ("currency", "eq", currency)) if currency else where


def _min_count(groups: dict[str, str | None]) -> int:
    if groups.get("least"):
        return max(1, _number(groups["least"] or "1"))
    if groups.get("times"):
        return max(1, _number(groups["times"] or "1"))
    if groups.get("over"):
        return _number(groups["over"] or "1") + 1
    return 2 if groups.get("more") or groups.get("repeat") else 1


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word]


def _hours(count: str | None, unit: str) -> Window | NotUnderstood:
    hours = _number(count or "1") * _UNIT_HOURS[unit.rstrip("s")]
    return Window(hours) if hours > 0 else NotUnderstood("a time window must be at least an hour.")


def _window(text: _Text) -> Window | None | NotUnderstood:
    for pattern in _WINDOWS:
        if match := text.take(pattern):
            if match.groupdict().get("named"):
                return Window(_NAMED_DAYS[match.group("named")] * 24)
            return _hours(match.group("count"), match.group("unit"))
    return None


def _places(text: _Text) -> tuple[tuple[str, ...], tuple[str, ...]] | NotUnderstood:
    """The countries said (by name, adjective or people: "Germans"), and those excluded ("outside the US")."""
    excluded = _codes(match.group("list") for match in text.take_all(_OUTSIDE))
    included = _codes(match.group("list") or match.groupdict().get("bare") or ""
                      for pattern in _PLACES for match in text.take_all(pattern))
    for codes in (excluded, included):
        if isinstance(codes, NotUnderstood):
            return codes
    assert not isinstance(excluded, NotUnderstood) and not isinstance(included, NotUnderstood)
    return included, excluded


def _codes(lists: Any) -> tuple[str, ...] | NotUnderstood:
    codes: list[str] = []
    for said in lists:
        if (plural := re.sub(r"\s+", " ", said.strip())) in _PLURALS:  # "Germans"
            codes.append(_COUNTRIES.codes[_PLURALS[plural]])
            continue
        for match in re.finditer(_NAME, said):
            alias = re.sub(r"\s+", " ", match.group(0))
            alias = _PLURALS.get(alias, alias)
            if alias in _COUNTRIES.ambiguous:
                return NotUnderstood(_COUNTRIES.ambiguous[alias])
            codes.append(_COUNTRIES.codes[alias])
    return tuple(dict.fromkeys(codes))


# --- Flows --------------------------------------------------------------------------------------

_DELAY_UNITS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "hr": 3600, "h": 3600, "day": 86400,
                "d": 86400, "week": 604800, "wk": 604800, "month": 30 * 86400, "year": 365 * 86400}
_DELAY_UNIT = r"(?P<unit>seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?|d|weeks?|wks?|months?|years?)\b"
_DELAY_COUNT = rf"(?P<count>{_N}|half an?)\s*"
_EVERY = _re(r"\b(?:(?:after|on|for|with|following) )?(?:every|each) (?:single )?(?:new )?"
             rf"(?P<noun>order|purchase|sale|checkout|sign-?up|cart)s?\b{_VALUE}")
_FLOW_MARKERS = _re(_unnamed(
    r"\bafter (?:(?:every|each|an?|their|the|his|her|any) )?(?:new )?(?:orders?|purchases?|checkouts?|sign-?ups?)\b"
    rf"|\b(?:after|wait(?:ing)?(?: for)?) {_DELAY_COUNT}{_DELAY_UNIT}"
    rf"|\b{_DELAY_COUNT}{_DELAY_UNIT} (?:later|after|afterwards)\b"
    r"|\bwhen(?:ever)? (?:someone|somebody|anyone|an? (?:customer|shopper|contact|visitor|person|subscriber|user)"
    r"|people|they|customers|shoppers|new)\b|\bas soon as\b|\b(?:every|each) time\b|\b(?:right|immediately) after\b"
    r"|\b(?:flows?|automations?|automated|automatically|drip)\b|\bpost-?purchase\b"
    r"|\bthe (?:next|following) day\b|\b(?:every|each) (?:new )?(?:order|purchase)\b"))
_WELCOME_LEAD = _re(rf"{_POLITE}(?:send (?:an? )?)?welcome\b")
_FLOW_INTRO = _re(rf"{_POLITE}(?:(?:set up|create|draft|build|make|start|add|design|write|prepare) )?"
                  r"(?:(?:an?|the|my|our) )?")
_FLOW_WORD = _re(r"\b(?:automated |automatic )?(?:flows?|automations?|sequences?|series|drip(?: campaign)?|journey)"
                 r"(?: (?:that|which|to|for))?\b|\bautomatically\b")
_FLOW_VERB = _re(r"\b(?P<verb>remind|nudge|ping|notify|follow up with|reach out to|contact|thank|welcome|win back"
                 r"|send (?:(?:them|him|her) )?(?:an? )?(?:reminder|follow-?up|thank-?you(?: note)?|note|nudge)|send)\b")
_POST_PURCHASE = _re(r"\b(?:post-?purchase|after (?:(?:a|their|the) )?(?:purchase|order))\b")
_BOUNDARY = _re(r"(?:,\s*|\b)(?:and )?(?:then|followed by|after that)\b|;")
_DELAYS = (
    _re(rf"\b(?:after|wait(?:ing)?(?: for)?|in) (?:about )?{_DELAY_COUNT}{_DELAY_UNIT}(?P<later> later| afterwards)?"),
    _re(rf"\b{_DELAY_COUNT}{_DELAY_UNIT} (?:(?P<later>later|afterwards|after that)|after)\b"),
    _re(r"\b(?P<now>immediately|right away|straight away|at once|instantly)\b"),
    _re(r"\bthe (?P<nextday>next|following) day\b|\bthe day after\b"),
)
_STEP_CHANNEL = _re(
    r"\b(?:(?:send|with|by|via|over|through|using|on) )?(?:(?:them|him|her|customers|people) )?"
    r"(?:(?:an?|the|another|one more|a second|a final|a follow-?up|a reminder|second|final) )?"
    r"(?:(?:reminder|follow-?up|thank-?you|welcome|win-?back) )?(?P<channel>e-?mail|text|sms|whatsapp|push|message)"
    r"(?: (?:messages?|notifications?|reminders?))?(?: (?:them|him|her))?\b")
_REENTRY = (
    (_re(rf"\b(?:at most|no more than|not more than|max(?:imum)?|only) once (?:every|a|per|each|in) "
         rf"(?:(?P<count>{_N}) )?(?P<unit>day|week|month|year)s?\b"), "afterDays"),
    (_re(rf"\b(?:can |may |let them )?(?:re-?enter|come back in|again|repeat)(?: the flow)? (?:after|every) "
         rf"(?P<count>{_N}) (?P<unit>day|week|month|year)s?\b"), "afterDays"),
    (_re(r"\b(?:every|each) time\b|\bwhenever\b"), "always"),
    (_re(r"\b(?:only|just) once\b|\bonce per (?:customer|contact|person|shopper)\b|\bonly the first time\b"
         r"|\bat most once\b"), "once"),
)
_REENTRY_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_FLOW_FILLER = _FILLER | frozenset((
    "after", "when", "someone", "somebody", "they", "he", "she", "him", "her", "again", "a", "reminder", "note",
    "follow-up", "followup", "message", "up", "as", "soon", "who", "about", "new", "then", "by", "also",
))
_TRIGGER_NOUNS = {"order": "order_placed", "purchase": "order_placed", "sale": "order_placed",
                  "checkout": "checkout_started", "signup": "customer_created", "sign-up": "customer_created",
                  "cart": "added_to_cart"}


def flow_definition(text: str) -> dict[str, Any] | NotUnderstood:
    """The flow a message asks for, in the flow API's JSON; NotUnderstood saying what was not."""
    quotes = [match.group("text").strip() for match in _QUOTED.finditer(text)]
    lowered = _Text(plain(_QUOTED.sub(lambda match: " " * len(match.group(0)), text).replace("’", "'")))
    return _flow(lowered, quotes)


def _is_flow(text: str) -> bool:
    if _FLOW_MARKERS.search(text):
        return True
    # "welcome new subscribers" is a flow; "welcome everyone who signed up this week" a campaign.
    return bool(_WELCOME_LEAD.search(text)) and not any(pattern.search(text) for pattern in (*_WINDOWS, *_DAYS))


@dataclass
class _StepGroup:
    """Channels said together, sent at one time: "an email and an SMS after 1 hour"."""

    channels: list[str] = field(default_factory=list)
    delay: int | None = None  # seconds
    relative: bool = False  # counted from the step before, not from the trigger
    closed: bool = False  # its delay came after its channels: the next channel starts another step
    said: bool = False  # a "then" follows it: a step even with no channel or delay of its own


@dataclass(frozen=True)
class _Trigger:
    event: str
    where: tuple[tuple[str, str, Any], ...]
    exits: tuple[str, ...]
    label: str


def _flow(text: _Text, quotes: list[str]) -> dict[str, Any] | NotUnderstood:
    text.take(_FLOW_INTRO)
    text.take_all(_FLOW_WORD)
    verbs = " ".join(match.group("verb") for match in text.take_all(_FLOW_VERB))
    reentry = _reentry(text)
    if any(pattern.search(text.text) for pattern in _WINDOWS):
        return NotUnderstood("a flow reacts to each new event as it happens, so it takes no time window "
                             "(“in the last 7 days”); ask for a campaign to reach people who already did it.")
    if any(pattern.search(text.text) for pattern in (*_TIME, *_DAYS)):
        return NotUnderstood("a flow sends each step a delay after the event (“after 1 hour”), "
                             "not at a date or time of day.")
    steps = _steps(text)  # before "every order": "2 days after every order" is a delay
    if isinstance(steps, NotUnderstood):
        return steps
    every = [(match.group("noun").replace("-", ""), _where(match.groupdict())) for match in text.take_all(_EVERY)]
    if text.take(_POST_PURCHASE):
        every.append(("purchase", ()))
    said = _places_and_behaviours(text, _FLOW_FILLER)
    if isinstance(said, NotUnderstood):
        return said
    places, found = said
    theme = next((theme for word, theme in _VERB_FLOW_THEMES if word in verbs), None)
    trigger = _trigger(found, every, theme)
    if isinstance(trigger, NotUnderstood):
        return trigger
    theme = theme or _TRIGGER_THEMES.get(trigger.event, "news")
    mode, days = reentry or ("always" if every or trigger.event == "order_placed" else "once", None)
    if quotes and len(quotes) != len(steps):
        return NotUnderstood("give one quoted message for each step, or none.")
    definition: dict[str, Any] = {
        "name": _flow_name(trigger, theme, places),
        "trigger": {"event": trigger.event, **({"where": where_json(trigger.where)} if trigger.where else {})},
    }
    if place_conditions := Audience(countries=places[0], excluded=places[1]).place_conditions():
        definition["filter"] = {"match": "all", "conditions": place_conditions}
    definition["exitWhen"] = [{"event": event} for event in trigger.exits]
    definition["reentry"] = {"mode": mode, **({"days": days} if days else {})}
    definition["steps"] = [
        {"delaySeconds": delay, "channelType": channel,
         "config": channel_config(channel, copy_for(theme, message=quotes[index] if quotes else None))}
        for index, (delay, channel) in enumerate(steps)]
    return definition


_VERB_FLOW_THEMES = (("thank", "thanks"), ("welcome", "welcome"), ("win back", "winback"))
_TRIGGER_THEMES = {"order_placed": "thanks", "customer_created": "welcome", "checkout_started": "abandoned",
                   "added_to_cart": "abandoned", "product_viewed": "browsed"}


def _trigger(found: list[_Found], every: list[tuple[str, tuple[tuple[str, str, Any], ...]]], theme: str | None
             ) -> _Trigger | NotUnderstood:
    """The one event that starts the flow, what it must carry, and the events that end it."""
    if any(each.behaviour.lapsed or each.window for each in found):
        return NotUnderstood("a flow starts when something happens; “haven't ordered in 90 days” is no event. "
                             "Ask for a campaign to reach lapsed customers.")
    events = [event for each in found for event in each.events]
    positives = [event for event in events if not event.negate]
    positives.extend(EventCondition(_TRIGGER_NOUNS[noun], where=where) for noun, where in every)
    if not positives and theme in ("welcome", "thanks"):
        positives.append(EventCondition("customer_created" if theme == "welcome" else "order_placed"))
    kinds = list(dict.fromkeys(event.event for event in positives))
    if not kinds:
        return NotUnderstood("what should start the flow? Say e.g. “after every order”, “when someone abandons "
                             "checkout” or “welcome new subscribers”.")
    if len(kinds) > 1:
        return NotUnderstood(f"a flow starts on one kind of event, and I heard {' and '.join(kinds)}.")
    if any(event.min_count > 1 for event in events):
        return NotUnderstood("a flow starts on each event as it happens, so it can't count them "
                             "(“at least 3 times”, “exactly once”).")
    exits = tuple(dict.fromkeys(event.event for event in events if event.negate))
    if kinds[0] in exits:
        return NotUnderstood("a flow can't start and end on the same event.")
    where = tuple(dict.fromkeys(pair for event in positives for pair in event.where))
    label = next((each.label for each in found if any(not event.negate for event in each.events)), kinds[0])
    return _Trigger(kinds[0], where, exits, label)


def _flow_name(trigger: _Trigger, theme: str, places: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    if trigger.event == "checkout_started" and "order_placed" in trigger.exits:
        name = "Abandoned checkout reminder"
    elif trigger.event == "added_to_cart" and "order_placed" in trigger.exits:
        name = "Abandoned cart reminder"
    elif trigger.event == "order_placed":
        name = "Post-purchase thank-you" if theme == "thanks" else "Post-purchase follow-up"
    elif trigger.event == "customer_created":
        name = "Welcome" if theme == "welcome" else "New customer follow-up"
    elif trigger.event == "product_viewed":
        name = "Browse follow-up"
    else:
        name = f"Follow-up: {trigger.label}"
    included, excluded = places
    if included:
        name += f" ({', '.join(included)})"
    elif excluded:
        name += f" (outside {', '.join(excluded)})"
    return name


def _reentry(text: _Text) -> tuple[str, int | None] | None:
    for pattern, mode in _REENTRY:
        if match := text.take(pattern):
            if mode != "afterDays":
                return mode, None
            return mode, _number(match.group("count") or "1") * _REENTRY_DAYS[match.group("unit")]
    return None


def _steps(text: _Text) -> list[tuple[int, str]] | NotUnderstood:
    """(delaySeconds, channel) of each step, from the delays, channels and "then"s in the order said.

    Channels said together share a step time ("an email and an SMS after 1 hour"). A delay counts from
    the trigger ("email after 1 hour and text after 1 day": the text 23 hours after the email) unless
    it follows "then" or says "later", when it counts from the step before."""
    atoms: list[tuple[int, str, Any]] = []
    for pattern in _DELAYS:
        atoms.extend((match.start(), "delay", match) for match in text.take_all(pattern))
    atoms.extend((match.start(), "channel", match.group("channel")) for match in text.take_all(_STEP_CHANNEL))
    atoms.extend((match.start(), "then", None) for match in text.take_all(_BOUNDARY))
    groups = [_StepGroup()]
    after_then = False
    for _, kind, value in sorted(atoms, key=lambda atom: atom[0]):
        current = groups[-1]
        if kind == "then":
            current.said = True
            groups.append(_StepGroup())
            after_then = True
        elif kind == "channel":
            if current.closed:
                groups.append(current := _StepGroup())
            current.channels.append("sms" if value == "message" else _CHANNEL_TYPES[value])
        else:
            seconds = _delay_seconds(value)
            if isinstance(seconds, NotUnderstood):
                return seconds
            if current.delay is not None:
                groups.append(current := _StepGroup())
            current.delay, current.closed = seconds, bool(current.channels)
            current.relative = after_then or bool(value.groupdict().get("later") or value.groupdict().get("nextday"))
            after_then = False
    return _schedule(groups)


def _delay_seconds(match: re.Match[str]) -> int | NotUnderstood:
    groups = match.groupdict()
    if groups.get("now"):
        return 0
    if "count" not in groups:  # the next day
        return 86400
    count = groups["count"] or "1"
    unit = _DELAY_UNITS[(groups["unit"] or "").rstrip("s")]
    return unit // 2 if count.startswith("half") else _number(count) * unit


def _schedule(groups: list[_StepGroup]) -> list[tuple[int, str]] | NotUnderstood:
    steps: list[tuple[int, str]] = []
    elapsed, channels = 0, ["email"]  # a step that names no channel: the one before, else email
    for group in groups:
        if not group.channels and group.delay is None and not group.said:
            continue
        channels = group.channels or channels
        delay = group.delay or 0
        gap = delay if group.relative or not steps else delay - elapsed
        if gap < 0:
            return NotUnderstood("each step's delay must come after the one before it "
                                 "(say “then … later” to count from the step before).")
        elapsed += gap
        if elapsed > MAX_FLOW_DELAY.total_seconds():
            return NotUnderstood(f"a flow's steps must all go out within {MAX_FLOW_DELAY.days} days.")
        steps.extend((gap if index == 0 else 0, channel) for index, channel in enumerate(channels))
    return steps or [(0, "email")]


# --- Send times ---------------------------------------------------------------------------------

def _send_time(text: _Text, now: datetime) -> datetime | None | NotUnderstood:
    """The proposed send time (aware UTC) the message names, if any."""
    clock = next(filter(None, (text.take(pattern) for pattern in _TIME)), None)
    day = next(filter(None, (text.take(pattern) for pattern in _DAYS)), None) or (text.take(_TODAY) if clock else None)
    if clock is None and day is None:
        return None
    try:
        at = _clock(clock) if clock else (TONIGHT if day and day.groupdict().get("relative") == "tonight"
                                          else DEFAULT_SEND_TIME)
        on = _day(day, now.date()) if day else now.date()
    except ValueError:
        return NotUnderstood("I couldn't read that date or time.")
    moment = datetime.combine(on, at, tzinfo=UTC)
    # A bare time ("at 5pm") means its next occurrence.
    return moment + timedelta(days=1) if day is None and moment <= now else moment


def _clock(match: re.Match[str]) -> time:
    groups = match.groupdict()
    if groups.get("named"):
        return time(12) if groups["named"] == "noon" else time(0)
    hour, minute = int(groups["hour"]), int(groups.get("minute") or 0)
    if groups.get("meridiem"):
        if not 1 <= hour <= 12:
            raise ValueError(hour)
        hour = hour % 12 + (12 if groups["meridiem"] == "pm" else 0)
    return time(hour, minute)


def _day(match: re.Match[str], today: date) -> date:
    groups = match.groupdict()
    if groups.get("relative"):
        return today + timedelta(days=1 if groups["relative"] == "tomorrow" else 0)
    if groups.get("weekday"):
        # The next one after today: "on friday" said on a Friday means a week later.
        return today + timedelta(days=(_WEEKDAYS.index(groups["weekday"]) - today.weekday() - 1) % 7 + 1)
    if groups.get("iso"):
        return date.fromisoformat(groups["iso"])
    named = date(today.year, _MONTHS.index(groups["month"]) + 1, int(groups["dom"]))
    return named if named >= today else named.replace(year=today.year + 1)
