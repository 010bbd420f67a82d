"""Message templates: Jinja syntax over the contact, rendered in a sandbox with a budget.

A merchant's template can read `contact.*` (and in a flow step `event.*`, the triggering event's
properties) and nothing else: the sandbox refuses attribute access
to Python internals, and undefined names render empty rather than failing a whole send.

Each render has a budget: RENDER_SECONDS of time and MAX_OUTPUT characters. Loops and calls check the
clock; operations that could build a huge value from a small template (`'x' * 10**8`, `center`,
`replace('', ...)`, `join`, `%` widths, ...) are sized before they run. A config is rendered against a
sample contact when it is saved, so a template that cannot fit is refused then; at send time a
render over budget fails that message with the reason.
"""
from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

RENDER_SECONDS = 0.5  # a real template renders in well under a millisecond
MAX_OUTPUT = 512 * 1024  # characters, for one field of one message
MAX_POWER_DIGITS = 1000
SAMPLE_CONTACT = {"id": "00000000-0000-0000-0000-000000000000", "email": "ada@example.com", "phone": "+14155550100",
                  "firstName": "Ada", "lastName": "Lovelace", "attributes": {}, "externalIds": {}}


class RenderBudgetExceeded(Exception):
    """The template needs more time or output than one message may take."""


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("render_deadline", default=float("inf"))


def _check_clock() -> None:
    if time.monotonic() > _deadline.get():
        raise RenderBudgetExceeded(f"rendering took more than {RENDER_SECONDS:g} s")


def _check_size(size: int) -> None:
    if size > MAX_OUTPUT:
        raise RenderBudgetExceeded(f"the template would produce more than {MAX_OUTPUT:,} characters")


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(item) for item in value if isinstance(item, (str, bytes)))
    return 1


_NUMBER = re.compile(r"\d+")


def _format_size(template: str, args: Any) -> int:
    """An upper bound on `template % args` or `template.format(...)`: every number in the template
    could be a width or a precision, every integer argument too (`%*d`, `{:{}}`)."""
    values = list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, (tuple, list)) else [args]
    widths = sum(int(n) for n in _NUMBER.findall(template)) + sum(v for v in values if isinstance(v, int))
    return len(template) + widths + sum(len(v) if isinstance(v, str) else 32 for v in values)


def _estimate(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The size of what string operation `name` would return, where it can outgrow its inputs."""
    if not isinstance(subject, str) and name != "join":
        return None
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        return max(first, len(subject))
    if name == "indent":
        width = kwargs.get("width", first if first is not None else 4)
        width = width if isinstance(width, int) else len(str(width))
        return len(subject) + (subject.count("\n") + 1) * width
    if name == "expandtabs":
        return len(subject) + subject.count("\t") * (first if isinstance(first, int) else 8)
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        return len(subject) + (len(subject) + 1 if not old else subject.count(old)) * len(new)
    if name == "wordwrap":
        wrap = kwargs.get("wrapstring") or (args[2] if len(args) > 2 else "\n")
        width = kwargs.get("width", first if isinstance(first, int) else 79)
        return len(subject) + (len(subject) // max(int(width), 1) + 1) * len(str(wrap))
    if name in ("format", "format_map"):
        return _format_size(subject, list(args) + list(kwargs.values()))
    if name == "join":
        items = list(subject) if not isinstance(subject, str) else list(first or ())
        separator = first if not isinstance(subject, str) else subject
        return sum(_size(i) for i in items) + len(items) * len(str(separator or ""))
    return None


def _budgeted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loop iterates through this: a long or nested loop runs out of time, not on."""
    for count, item in enumerate(iterable):
        if count % 256 == 0:
            _check_clock()
        yield item


class _BudgetedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["_budgeted"] = _budgeted
        for name in ("center", "indent", "replace", "wordwrap", "join", "format"):
            self.filters[name] = self._sized_filter(name, self.filters[name])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name("_budgeted", "load"), [loop.iter], [], None, None)
        return tree

    @staticmethod
    def _sized_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        # Filters taking the environment or eval context get it first; the value follows.
        value_at = 1 if getattr(original, "jinja_pass_arg", None) else 0

        def sized(*given: Any, **kwargs: Any) -> Any:
            args = list(given)
            if name == "join":
                args[value_at] = list(args[value_at])  # a generator is read once, for both
            estimate = _estimate(name, args[value_at], tuple(args[value_at + 1:]), kwargs)
            if estimate is not None:
                _check_size(estimate)
            return original(*args, **kwargs)
        if hasattr(original, "jinja_pass_arg"):
            sized.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
        return sized

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                    _check_size(_size(sequence) * max(times, 0))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() * 0.302 > MAX_POWER_DIGITS:
                raise RenderBudgetExceeded(f"numbers may have at most {MAX_POWER_DIGITS} digits")
        elif operator == "%" and isinstance(left, str):
            _check_size(_format_size(left, right))
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_clock()
        # str.format comes wrapped by the sandbox (functools.update_wrapper keeps `__wrapped__`).
        subject = getattr(__obj, "__self__", None) or getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        name = getattr(__obj, "__name__", "")
        if subject is not None and (estimate := _estimate(name, subject, args, kwargs)) is not None:
            _check_size(estimate)
        return super().call(__context, __obj, *args, **kwargs)


def _blank_none(value: Any) -> Any:
    # A contact without a first name reads "Hi ," rather than "Hi None,".
    return "" if value is None else value


_plain = _BudgetedSandbox(autoescape=False, finalize=_blank_none)
# HTML bodies escape what contacts typed into their names.
_html = _BudgetedSandbox(autoescape=select_autoescape(default_for_string=True, default=True), finalize=_blank_none)


@lru_cache(maxsize=512)
def _compiled(source: str, html: bool):
    return (_html if html else _plain).from_string(source)


def render(source: str, contact: dict[str, Any], html: bool = False, event: dict[str, Any] | None = None) -> str:
    """Render `source` with `contact` (and, for a flow step, the triggering `event`'s properties) as
    the only variables, within the budget (RenderBudgetExceeded)."""
    token = _deadline.set(time.monotonic() + RENDER_SECONDS)
    try:
        produced, parts = 0, []
        for part in _compiled(source, html).generate(contact=contact, event=event or {}):
            produced += len(part)
            _check_size(produced)
            parts.append(part)
        return "".join(parts)
    finally:
        _deadline.reset(token)


def template_error(source: str) -> str | None:
    """Why `source` cannot be used (None: it can): invalid syntax, or over budget for a sample contact."""
    try:
        _compiled(source, False)
    except TemplateSyntaxError as exc:
        return f"Template error on line {exc.lineno}: {exc.message}"
    except RecursionError:  # Jinja's parser recurses per nesting level
        return "The template is nested too deeply."
    try:
        render(source, SAMPLE_CONTACT)
    except RenderBudgetExceeded as exc:
        return f"The template is too costly to render: {exc}."
    except Exception:  # noqa: BLE001 (data-dependent failures are judged per contact at send time)
        pass
    return None


def contact_context(contact: Any) -> dict[str, Any]:
    """What templates see of a contact (a Contact row or anything with the same attributes)."""
    return {
        "id": str(contact.id),
        "email": contact.email,
        "phone": contact.phone,
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "attributes": dict(contact.attributes or {}),
        "externalIds": dict(contact.external_ids or {}),
    }
