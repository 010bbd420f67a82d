"""Which URLs a merchant may register as a webhook endpoint.

Checked when the endpoint is saved, without any lookup: https only, no credentials in the URL, and
no host that names a private place outright (an IP address that is not public, `localhost`,
`*.local`, `*.internal`). A host name is resolved only when a request is made, and every address it
resolves to must then be public too (app.channels.endpoint_guard), so a name that later points
inside the network is refused at that point. Networks the operator allows
(`WEBHOOK_ALLOWED_PRIVATE_NETWORKS`, never in production) may be named by IP address, over http too:
for receivers on the same machine in tests.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from app.channels.endpoint_guard import Network

URL_MAX = 2000
PRIVATE_NAMES = ("localhost", ".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def url_problem(url: str, allowed_private: Sequence[Network] = ()) -> str | None:
    """Why `url` cannot receive webhooks, or None when it can."""
    if len(url) > URL_MAX:
        return f"Must be at most {URL_MAX} characters."
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "Must not contain spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises ValueError on a port out of range
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "Must be an absolute https URL."
    if parts.username is not None or parts.password is not None:
        return "Must not hold a user name or password: authenticate requests by their signature."
    host = parts.hostname.rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    allowed = address is not None and any(address in network for network in allowed_private)
    if parts.scheme != "https" and not allowed:
        return "Must be an https URL."
    if address is not None and not (address.is_global or allowed):
        return "Must not point at a private, loopback or link-local address."
    if address is None and (host == PRIVATE_NAMES[0] or host.endswith(PRIVATE_NAMES[1:])):
        return "Must not point at a private host name."
    return None
