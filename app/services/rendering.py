"""Message templates: Jinja syntax over the contact, rendered in a sandbox.

A merchant's template can read `contact.*` and nothing else: the sandbox refuses attribute access
to Python internals, and undefined names render empty rather than failing a whole send.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _blank_none(value: Any) -> Any:
    # A contact without a first name reads "Hi ," rather than "Hi None,".
    return "" if value is None else value


_plain = ImmutableSandboxedEnvironment(autoescape=False, finalize=_blank_none)
# HTML bodies escape what contacts typed into their names.
_html = ImmutableSandboxedEnvironment(autoescape=select_autoescape(default_for_string=True, default=True),
                                      finalize=_blank_none)


@lru_cache(maxsize=512)
def _compiled(source: str, html: bool):
    return (_html if html else _plain).from_string(source)


def render(source: str, contact: dict[str, Any], html: bool = False) -> str:
    """Render `source` with `contact` as the only variable."""
    return _compiled(source, html).render(contact=contact)


def template_error(source: str) -> str | None:
    """Why `source` is not a valid template (None: it is)."""
    try:
        _compiled(source, False)
    except TemplateSyntaxError as exc:
        return f"Template error on line {exc.lineno}: {exc.message}"
    except RecursionError:  # Jinja's parser recurses per nesting level
        return "The template is nested too deeply."
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
