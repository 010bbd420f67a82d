"""What the built-in assistant understands of a merchant's message, as plain data.

`parse(text, now)` answers one of: `DraftRequest` ("email|text|... <who> [when they did it]
[about <topic>] [, <send time>]"), `CountRequest` ("how many orders this week?"), `PreviewRequest`
("preview <who>", "how many people would get ...") or `NotUnderstood`. The README section "The
built-in assistant" documents this grammar: change both together.

Matching is on lower-cased text; every recognised phrase is blanked out in place (so positions, and
with them the order of the conditions, survive), and whatever is left must be filler words. A word
the grammar does not know makes the request `NotUnderstood` rather than silently widening the
audience to everyone. Time windows are rolling (this week = the last 7 days) because that is what
`withinDays` and `windowDays` express; send times are UTC because the merchant's zone is unknown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.assistant.tools import DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS
from app.services.audience_sql import MAX_WITHIN_DAYS


def _re(pattern: str) -> re.Pattern[str]:
    """A pattern written with single spaces that match any run of whitespace."""
    return re.compile(pattern.replace(" ", r"\s+"))


# --- Results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventCondition:
    event: str
    negate: bool = False
    min_count: int = 1


@dataclass(frozen=True)
class Audience:
    countries: tuple[str, ...] = ()
    events: tuple[EventCondition, ...] = ()
    labels: tuple[str, ...] = ()  # what they did, as said in names: "abandoned checkout"
    theme: str = "news"  # which default copy fits them
    window_days: int | None = None

    @property
    def name(self) -> str:
        subject = f"{' and '.join(self.countries)} contacts" if self.countries else "Everyone"
        if not self.labels:
            return subject
        window = f" {period(self.window_days)}" if self.window_days else ""
        return f"{subject} who {' and '.join(self.labels)}{window}"

    def definition(self, channels: tuple[str, ...] = ()) -> dict[str, Any]:
        """The SPEC §6 audience definition; consent to the channels when there are any."""
        conditions: list[dict[str, Any]] = []
        if self.countries:
            many = len(self.countries) > 1
            conditions.append({"type": "attribute", "field": "country", "op": "in" if many else "eq",
                               "value": list(self.countries) if many else self.countries[0]})
        conditions.extend(self._event(event) for event in self.events)
        consents: list[dict[str, Any]] = [{"type": "consent", "channel": channel} for channel in channels]
        if len(consents) > 1:
            consents = [{"type": "group", "match": "any", "conditions": consents}]
        return {"match": "all", "conditions": conditions + consents}

    def _event(self, event: EventCondition) -> dict[str, Any]:
        condition: dict[str, Any] = {"type": "event", "event": event.event}
        if self.window_days:
            condition["withinDays"] = self.window_days
        if event.min_count > 1:
            condition["minCount"] = event.min_count
        if event.negate:
            condition["negate"] = True
        return condition


@dataclass(frozen=True)
class DraftRequest:
    channels: tuple[str, ...]
    audience: Audience
    send_at: datetime | None = None  # aware UTC; may be in the past, which the caller reports
    topic: str | None = None
    message: str | None = None  # quoted text, used verbatim as the message


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


Request = DraftRequest | CountRequest | PreviewRequest | NotUnderstood


def period(days: int) -> str:
    return "in the last day" if days == 1 else f"in the last {days} days"


# --- Vocabulary ---------------------------------------------------------------------------------

_POLITE = r"^\s*(?:(?:please|can you|could you|would you|let's|i want to|i'd like to) )*"
_CHANNEL = r"e-?mail|text|sms|whatsapp|push|message"
_LEAD = _re(rf"{_POLITE}(?:(?:send|draft|create|write|get|receive) )?(?:(?:an?|the) )?(?P<channels>(?:{_CHANNEL})"
            rf"(?:\s*(?:,|\band\b|&|\+)\s*(?:{_CHANNEL}))*)(?: (?:messages?|notifications?|campaign))?(?: to)?\b")
_VIA = _re(r"\b(?:on|via|by|over|through|using) (?P<channel>e-?mail|text|sms|whatsapp|push)"
           r"(?: (?:messages?|notifications?))?\b")
_CHANNEL_TYPES = {"email": "email", "e-mail": "email", "text": "sms", "sms": "sms", "whatsapp": "whatsapp",
                  "push": "push"}

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "once": 1, "twice": 2}
_NUMBER = rf"\d{{1,4}}|{'|'.join(_NUMBERS)}"
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_WINDOWS = (
    _re(rf"\b(?:(?:in|over|within|during|for) )?(?:the )?(?:last|past) (?:(?P<count>{_NUMBER}) )?"
        r"(?P<unit>day|week|month|year)s?\b"),
    _re(rf"\bwithin (?P<count>{_NUMBER}) (?P<unit>day|week|month|year)s?\b"),
    _re(r"\b(?:(?:in|during) )?(?P<named>this week|this month|this year|today|yesterday|recently)\b"),
)
_NAMED_DAYS = {"this week": 7, "this month": 30, "this year": 365, "today": 1, "yesterday": 2, "recently": 30}

# alpha-2 code: how merchants say it. Bare "us" counts only before a noun or as "the us" ("from us").
_COUNTRIES = {
    "US": ("us", "usa", "united states", "america", "american"), "GB": ("uk", "united kingdom", "britain", "british"),
    "CA": ("canada", "canadian"), "AU": ("australia", "australian"), "NZ": ("new zealand",),
    "IE": ("ireland", "irish"), "DE": ("germany", "german"), "FR": ("france", "french"),
    "ES": ("spain", "spanish"), "IT": ("italy", "italian"), "NL": ("netherlands", "dutch"),
    "MX": ("mexico", "mexican"), "BR": ("brazil", "brazilian"), "IN": ("india", "indian"), "JP": ("japan", "japanese"),
}
_COUNTRY_OF = {alias: code for code, aliases in _COUNTRIES.items() for alias in aliases}
_ALIASES = sorted(_COUNTRY_OF, key=len, reverse=True)  # longest first: "united states" before "us"
_PEOPLE = r"customers|contacts|people|shoppers|subscribers|buyers|users|clients|audience"
_COUNTRY_PATTERNS = (
    _re(rf"\b(?:in|from) the (?P<name>{'|'.join(_ALIASES)})\b"),
    _re(rf"\b(?:in|from) (?P<name>{'|'.join(alias for alias in _ALIASES if alias != 'us')})\b"),
    _re(rf"\b(?P<name>{'|'.join(_ALIASES)})(?:-based)?(?= (?:and \w+ )?(?:{_PEOPLE})\b)"),
)

_BUY = r"(?:buy|bought|buying|purchas(?:e|ed|ing)|order(?:ed|ing)?|plac(?:e|ed|ing) (?:an )?orders?|shopped)"
_NOT = r"(?:didn'?t|did not|haven'?t|have not|hasn'?t|has not|never|don'?t|do not|not yet|yet to|without)"
_TIMES = (rf"(?: (?:at least (?P<least>{_NUMBER})(?: times?)?"
          r"|(?P<times>\d{1,4}|two|three|four|five)(?: or more)? times|(?P<more>more than once|again|twice)))?")


@dataclass(frozen=True)
class _Behaviour:
    label: str
    theme: str
    events: tuple[EventCondition, ...]
    pattern: re.Pattern[str]


_ORDER, _NO_ORDER = EventCondition("order_placed"), EventCondition("order_placed", negate=True)
# Earlier entries win where phrases overlap ("didn't buy" before "buy").
_BEHAVIOURS = (
    _Behaviour("abandoned checkout", "abandoned", (EventCondition("checkout_started"), _NO_ORDER),
               _re(r"\babandon(?:ed|s)? (?:(?:their|a|the) )?checkouts?\b|\bcheckout abandoners\b")),
    _Behaviour("abandoned their cart", "abandoned", (EventCondition("added_to_cart"), _NO_ORDER),
               _re(r"\babandon(?:ed|s)? (?:(?:their|a|the) )?(?:shopping )?(?:carts?|baskets?)\b|\bcart abandoners\b")),
    _Behaviour("didn't buy", "winback", (_NO_ORDER,),
               _re(rf"\b{_NOT} (?:(?:yet|ever) )?{_BUY}(?: anything)?\b|\bnon-?buyers\b")),
    _Behaviour("bought", "thanks", (_ORDER,),
               _re(rf"\b(?:{_BUY}|made a purchase)\b(?: (?:something|anything))?"
                   rf"(?: from (?:us|our (?:store|shop|site|website)))?{_TIMES}"
                   r"|\b(?P<repeat>repeat) (?:customers|buyers)\b|\b(?:buyers|purchasers|past customers)\b")),
    _Behaviour("viewed a product", "browsed", (EventCondition("product_viewed"),),
               _re(r"\b(?:viewed|looked at|browsed) (?:(?:a|any|the|our|some) )?(?:products?|items?)\b"
                   r"|\bbrowsed\b|\bproduct viewers\b")),
    _Behaviour("added to cart", "browsed", (EventCondition("added_to_cart"),),
               _re(r"\badded (?:(?:something|anything|items?|products?) )?to (?:(?:their|the|a) )?cart\b")),
    _Behaviour("started checkout", "abandoned", (EventCondition("checkout_started"),),
               _re(r"\bstarted (?:(?:a|the) )?checkouts?\b")),
    _Behaviour("visited the store", "news", (EventCondition("page_viewed"),),
               _re(r"\bvisited(?: (?:the|our|my) (?:store|site|website|shop))?\b|\bvisitors\b")),
    _Behaviour("signed up", "welcome", (EventCondition("customer_created"),),
               _re(r"\bsigned up\b|\bjoined\b|\bnew (?:customers|contacts|subscribers|signups)\b")),
    _Behaviour("became a lead", "news", (EventCondition("lead"),), _re(r"\bleads\b")),
)
_FILLER = frozenset((
    "everyone", "everybody", "all", "any", "anyone", "anybody", "my", "our", "your", "the", "a", "an", "of",
    "customers", "customer", "contacts", "contact", "people", "person", "shoppers", "shopper", "subscribers",
    "subscriber", "users", "user", "clients", "client", "audience", "list", "who", "that", "which", "have", "has",
    "had", "did", "do", "does", "and", "but", "or", "yet", "to", "with", "them", "those", "these", "in", "from",
    "on", "at", "it", "is", "are", "were", "was", "ever", "send", "schedule", "for", "go", "out", "also",
))

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

_QUOTED = re.compile(r"[\"“”](?P<text>[^\"“”]+)[\"“”]")
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
    """The lower-cased message with recognised phrases blanked out in place."""

    def __init__(self, text: str) -> None:
        self.text = text

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.search(self.text)
        if match:
            self.text = self.text[:match.start()] + " " * (match.end() - match.start()) + self.text[match.end():]
        return match

    def leftover(self, filler: frozenset[str]) -> list[str]:
        return [word for word in re.findall(r"[\w'-]+", self.text) if word not in filler]


def parse(text: str, now: datetime) -> Request:
    quoted = _QUOTED.search(text)
    lowered = _Text(text.replace("’", "'").lower())
    if quoted:
        lowered.take(_QUOTED)
    if lowered.take(_PREVIEW):
        return _preview(lowered)
    if count := lowered.take(_COUNT):
        return _count(count.group("noun"), lowered)
    return _draft(text, lowered, quoted.group("text").strip() if quoted else None, now)


def _draft(text: str, lowered: _Text, message: str | None, now: datetime) -> Request:
    lead = lowered.take(_LEAD)
    if lead is None:
        return NotUnderstood()
    channels = _channels(lead.group("channels"), lowered)
    send_at = _send_time(lowered, now)
    if isinstance(send_at, NotUnderstood):
        return send_at
    topic = _original(text, lowered.take(_TOPIC), "topic")
    if not lowered.leftover(frozenset()):
        return NotUnderstood("who should get it? Say for example “email everyone”.")
    audience = _audience(lowered)
    if isinstance(audience, NotUnderstood):
        return audience
    return DraftRequest(channels, audience, send_at, topic, message)


def _original(text: str, match: re.Match[str] | None, group: str) -> str | None:
    """The matched words as the merchant typed them (case kept) when lower-casing kept the length."""
    if match is None:
        return None
    source = text if len(text) == len(match.string) else match.string
    return source[match.start(group):match.end(group)].strip() or None


def _channels(said: str, text: _Text) -> tuple[str, ...]:
    named = [_CHANNEL_TYPES[word] for word in re.findall(_CHANNEL, said) if word != "message"]
    named.extend(_CHANNEL_TYPES[via.group("channel")] for via in _take_all(text, _VIA))
    # A bare "message" means SMS unless a channel was named ("message US customers on WhatsApp").
    return tuple(dict.fromkeys(named or (["sms"] if said else [])))


def _take_all(text: _Text, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    found = []
    while match := text.take(pattern):
        found.append(match)
    return found


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
        audience = _audience(text, window)
        return audience if isinstance(audience, NotUnderstood) else PreviewRequest(audience)
    if leftover := text.leftover(_COUNT_FILLER):
        return NotUnderstood(f"I can't count by “{' '.join(leftover)}”.")
    return CountRequest(metric, min(window or DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS))


def _audience(text: _Text, window: int | None = None) -> Audience | NotUnderstood:
    if window is None:
        stated = _window(text)
        if isinstance(stated, NotUnderstood):
            return stated
        window = stated
    countries = tuple(dict.fromkeys(_COUNTRY_OF[match.group("name")] for pattern in _COUNTRY_PATTERNS
                                    for match in _take_all(text, pattern)))
    # Behaviours become conditions in the order the merchant said them.
    found = sorted((match.start(), index, match) for index, behaviour in enumerate(_BEHAVIOURS)
                   for match in _take_all(text, behaviour.pattern))
    if leftover := text.leftover(_FILLER):
        return NotUnderstood(f"I didn't understand “{' '.join(leftover)}”.")
    if window and not found:
        return NotUnderstood("a time window needs something people did in it (e.g. “who bought this week”); "
                             "to propose a send time, say e.g. “tomorrow at 9am”.")
    events: list[EventCondition] = []
    labels: list[str] = []
    for _, index, match in found:
        behaviour = _BEHAVIOURS[index]
        minimum = _min_count(match)
        events.extend(EventCondition(e.event, e.negate, minimum if not e.negate else 1) for e in behaviour.events)
        labels.append(f"bought at least {minimum} times" if minimum > 1 else behaviour.label)
    theme = _BEHAVIOURS[found[0][1]].theme if found else "news"
    return Audience(countries, tuple(dict.fromkeys(events)), tuple(dict.fromkeys(labels)), theme,
                    min(window, MAX_WITHIN_DAYS) if window else None)


def _min_count(match: re.Match[str]) -> int:
    groups = match.groupdict()
    if groups.get("least"):
        return max(1, _number(groups["least"]))
    if groups.get("times"):
        return max(1, _number(groups["times"]))
    return 2 if groups.get("more") or groups.get("repeat") else 1


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word]


def _window(text: _Text) -> int | None | NotUnderstood:
    for pattern in _WINDOWS:
        if match := text.take(pattern):
            if match.groupdict().get("named"):
                return _NAMED_DAYS[match.group("named")]
            days = _number(match.group("count") or "1") * _UNIT_DAYS[match.group("unit")]
            return days if days > 0 else NotUnderstood("a time window must be at least a day.")
    return None


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
