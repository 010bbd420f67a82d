"""Meta Pixel connector: verify that the token can read the configured pixel through the Graph API.

`GET {base}/{apiVersion}/{pixelId}?fields=id,name` with the token as a Bearer header (Graph API
accepts it there, and it keeps the token out of URLs and access logs). Graph API reports most
failures as HTTP 400 with an error `code`: 190/102/104 mean the token is bad, 10 and 200-299 that it
lacks a permission, 4/17/32/613 are rate limits, 2 (or `is_transient`) a passing fault, and 100 with
subcode 33 an unknown or unreachable object.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

from app.sources.http import (
    CredentialsRejected,
    ProviderError,
    RetryPolicy,
    SourceRejected,
    json_body,
    send,
)

PROVIDER = "Meta Graph API"
DEFAULT_API_VERSION = "v21.0"
_API_VERSION = re.compile(r"v\d+\.\d+")
_TOKEN_ERRORS = frozenset({102, 104, 190})
_RATE_LIMIT_ERRORS = frozenset({4, 17, 32, 613})
_RATE_LIMIT_WAIT = 5.0  # Graph API sends no Retry-After; its windows are minutes, so back off firmly


def verify_pixel(config: dict[str, Any], *, base_url: str, policy: RetryPolicy) -> dict[str, Any]:
    """`{"pixel": {"id", "name"}}` when the pixel is readable with the configured token."""
    version = str(config.get("apiVersion") or DEFAULT_API_VERSION)
    if not _API_VERSION.fullmatch(version):
        raise SourceRejected(f"apiVersion {version!r} is not a Graph API version (e.g. v21.0).")
    pixel_id, token = str(config.get("pixelId") or "").strip(), config.get("accessToken")
    if not pixel_id.isdigit():
        raise SourceRejected(f"pixelId {pixel_id!r} is not a Meta pixel id.")
    if not token:
        raise CredentialsRejected("No Meta access token is configured.")
    with requests.Session() as session:
        response = send(session, "GET", f"{base_url.rstrip('/')}/{version}/{quote(pixel_id)}", provider=PROVIDER,
                        policy=policy, transient_hint=_transient_wait, params={"fields": "id,name"},
                        headers={"Authorization": f"Bearer {token}"})
    body = json_body(response)
    if response.status_code == 200 and isinstance(body, dict) and body.get("id"):
        return {"pixel": {"id": str(body["id"]), "name": body.get("name")}}
    raise _failure(response.status_code, _graph_error(body), pixel_id)


def _graph_error(body: Any) -> dict[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _transient_wait(response: requests.Response) -> float | None:
    error = _graph_error(json_body(response))
    if error.get("code") in _RATE_LIMIT_ERRORS:
        return _RATE_LIMIT_WAIT
    if error.get("is_transient") or error.get("code") == 2:
        return 1.0
    return None


def _failure(status: int, error: dict[str, Any], pixel_id: str) -> ProviderError:
    message = str(error.get("message") or f"HTTP {status}")
    code = error.get("code")
    if code in _TOKEN_ERRORS:
        return CredentialsRejected(f"Meta rejected the access token: {message}")
    if code == 10 or (isinstance(code, int) and 200 <= code < 300):
        return CredentialsRejected(f"The access token lacks a permission Meta requires: {message}")
    if code == 100 or status == 404:
        return SourceRejected(f"Pixel {pixel_id} was not found or this token cannot read it: {message}")
    return ProviderError(f"Meta could not read pixel {pixel_id}: {message}")
