"""The few HTML pages that links in mail open (unsubscribe, email verification): one look, one set of
headers."""
from __future__ import annotations

from html import escape

from flask import Response

from app.errors import NotFound

NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache", "Expires": "0"}
# The token in the URL is a credential: keep it out of Referer headers, frames and search indexes.
PAGE_HEADERS = {
    **NO_CACHE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str, status: int = 200) -> Response:
    """`body` is HTML: escape anything in it that did not come from Herald's own code."""
    html = PAGE.format(title=escape(title), body=body)
    return Response(html, status=status, mimetype="text/html", headers=PAGE_HEADERS)


def invalid_link(exc: NotFound) -> Response:
    """A link from a message that leads nowhere: people land here from their inbox or phone, so a
    page, not a JSON error body."""
    return page("Link not valid", f"<p>{escape(exc.message)}</p>", status=404)
