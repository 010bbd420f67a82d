"""What JSON Herald takes in: parsed strictly, nested within bounds, and holding only text that
PostgreSQL can store (no U+0000, no lone surrogates, which neither `text` nor `jsonb` accept).

API bodies that break these rules are refused (400/422). Ingested events are provider data: an event
holding unstorable text is kept, with the text replaced, and quarantined on its own (SPEC §4).
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

MAX_DEPTH = 64  # far deeper than any body Herald defines; a bound on every walk over the input
REPLACEMENT = "\ufffd"


class JsonRejected(ValueError):
    """The body cannot be taken: `path` (e.g. ("data", 3, "event_name")) says where, when known."""

    def __init__(self, message: str, path: tuple[str | int, ...] | None = None) -> None:
        super().__init__(message)
        self.message, self.path = message, path


def parse(raw: bytes, *, lenient_text: bool = False) -> Any:
    """Parse a request body: invalid JSON or nesting past MAX_DEPTH is refused without a path; NaN,
    Infinity, NUL and lone surrogates (which browsers' JSON.stringify does emit) parse, and are then
    refused with their path — unless `lenient_text`, where the caller quarantines what holds them."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:  # the standard parser takes what orjson refuses but can still be pointed at
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise JsonRejected(f"The body is not valid JSON: {exc}") from None
    else:
        # orjson refuses lone surrogates and NaN, and a NUL can only arrive escaped: without that
        # escape in the bytes, only the nesting is left to check (the common case, and the cheap one).
        if b"\\u0000" not in raw:
            if _deeper_than(value, MAX_DEPTH):
                raise JsonRejected(TOO_DEEP)
            return value
    problem = first_problem(value)
    if problem is not None and problem[1] == TOO_DEEP:
        raise JsonRejected(TOO_DEEP)
    if problem is not None and not lenient_text:
        raise JsonRejected(problem[1], problem[0])
    return value


TOO_DEEP = f"Nested deeper than {MAX_DEPTH} levels."


def _deeper_than(value: Any, limit: int) -> bool:
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [inner for item in level if isinstance(item, (dict, list))
                 for inner in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return False
    return True


def storable(value: Any) -> bool:
    """Quickly: no NUL and no lone surrogate anywhere in `value`, nested within orjson's 255 levels
    (non-finite numbers, which only the lenient parse lets through, are written as null)."""
    try:
        return b"\\u0000" not in orjson.dumps(value)
    except orjson.JSONEncodeError:  # a lone surrogate, or nesting orjson refuses
        return False


def first_problem(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """(path, why) of the first value PostgreSQL could not store, or of nesting past MAX_DEPTH."""
    pending: list[tuple[Any, tuple[str | int, ...], int]] = [(value, (), 0)]
    while pending:
        item, path, depth = pending.pop()
        if depth > MAX_DEPTH:
            return path, TOO_DEEP
        if isinstance(item, dict):
            for key, inner in item.items():
                inner_path = (*path, key)
                if (why := _text_problem(key)) is not None:
                    return inner_path, f"Key {why}"
                pending.append((inner, inner_path, depth + 1))
        elif isinstance(item, list):
            pending.extend(((inner, (*path, index), depth + 1) for index, inner in enumerate(item)))
        elif isinstance(item, str):
            if (why := _text_problem(item)) is not None:
                return path, f"Text {why}"
        elif isinstance(item, float) and not math.isfinite(item):
            return path, "Numbers must be finite."
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (U+0000) characters."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone surrogates (invalid Unicode)."
    return None


def storable_copy(value: Any) -> Any:
    """`value` with every unstorable character replaced by U+FFFD and non-finite numbers by null."""
    if isinstance(value, dict):
        return {storable_text(k): storable_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_copy(v) for v in value]
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def storable_text(text: str) -> str:
    cleaned = text.replace("\x00", REPLACEMENT)
    if _text_problem(cleaned) is None:
        return cleaned
    return "".join(REPLACEMENT if "\ud800" <= char <= "\udfff" else char for char in cleaned)
