"""Emulator of the parts of Meta's Graph API that a pixel data source touches.

- `GET  /{version}/{pixel_id}`         the AdsPixel node (default fields id and name; `fields=` selects)
- `POST /{version}/{pixel_id}/events`  the Conversions API: `data` (JSON list, or a JSON string in a form
                                        body), optional `test_event_code`; answers `events_received`

The access token may come as the `access_token` query/form/JSON parameter or as `Authorization:
Bearer <token>` (Graph API also accepts `OAuth <token>`). Errors use Graph API's envelope
`{"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}` with HTTP 400.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response

_PATH = re.compile(r"/(?P<version>v\d+\.\d+)/(?P<pixel_id>[^/]+)(?P<edge>/events)?/?")
MAX_EVENTS_PER_BATCH = 1000
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600  # documented: older events fail the whole batch
PIXEL_FIELDS = ("id", "name", "code", "creation_time", "last_fired_time", "is_unavailable",
                "data_use_setting", "owner_business", "automatic_matching_fields", "enable_automatic_matching",
                "first_party_cookie_status")


def meta_time(moment: datetime | None = None) -> str:
    """Graph API's datetime format, e.g. 2024-05-01T12:00:00+0000."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def graph_error(message: str, code: int, *, type_: str = "OAuthException", status: int = 400,
                subcode: int | None = None, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    error["fbtrace_id"] = _trace_id()
    return json_response({"error": error}, status, headers)


def _trace_id() -> str:
    return secrets.token_urlsafe(8)


class MetaGraphEmulator(EmulatorServer):
    """Pixels and a Conversions API sink behind a real HTTP Graph API."""

    def __init__(self, valid_tokens: set[str] | None = None, *, expired_tokens: set[str] | None = None,
                 auth_error_status: int = 400) -> None:
        super().__init__()
        self.valid_tokens: set[str] = set(valid_tokens) if valid_tokens is not None else {"meta_test_token"}
        self.expired_tokens: set[str] = set(expired_tokens or ())
        self.auth_error_status = auth_error_status  # Graph API answers 400; set 401 to test that variant too
        self._pixels: dict[str, dict[str, Any]] = {}
        self._batches: list[dict[str, Any]] = []

    # -- data helpers ----------------------------------------------------------------------
    def add_pixel(self, pixel_id: str | None = None, name: str = "Herald Test Pixel", **fields: Any) -> dict[str, Any]:
        """Add a pixel (id defaults to a random 15-digit string); `fields` override any AdsPixel field."""
        pixel_id = pixel_id or str(secrets.randbelow(9 * 10**14) + 10**14)
        pixel = {"id": pixel_id, "name": name, "code": f"<!-- Meta Pixel Code -->fbq('init', '{pixel_id}');",
                 "creation_time": meta_time(), "last_fired_time": None, "is_unavailable": False,
                 "data_use_setting": "ADVERTISING_AND_ANALYTICS",
                 "owner_business": {"id": "1000000001", "name": "Herald"},
                 "automatic_matching_fields": [], "enable_automatic_matching": False,
                 "first_party_cookie_status": "FIRST_PARTY_COOKIE_ENABLED", **fields}
        with self.lock:
            self._pixels[pixel_id] = pixel
            return copy.deepcopy(pixel)

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Accepted CAPI posts: `{"pixel_id", "data": [...], "test_event_code", "fbtrace_id"}`, oldest first."""
        with self.lock:
            return copy.deepcopy(self._batches)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted CAPI event, flattened across batches."""
        return [event for batch in self.batches for event in batch["data"]]

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return graph_error("Unknown path components: " + request.path, 2500)
        params = _params(request)
        auth_failure = self._check_token(params.get("access_token") or _bearer(request))
        if auth_failure is not None:
            return auth_failure
        pixel_id, is_events = match["pixel_id"], bool(match["edge"])
        with self.lock:
            pixel = self._pixels.get(pixel_id)
            if pixel is None:
                return _no_such_object(pixel_id, "post" if request.method == "POST" else "get")
            if is_events and request.method == "POST":
                return self._post_events(pixel, params)
            if not is_events and request.method == "GET":
                return _read_pixel(pixel, params.get("fields"))
        return _no_such_object(pixel_id, request.method.lower())

    def _check_token(self, token: str | None) -> Response | None:
        if not token:
            return graph_error("An access token is required to request this resource.", 104,
                               status=self.auth_error_status)
        if token in self.expired_tokens:
            return graph_error("Error validating access token: Session has expired on Monday, 01-Jan-24 "
                               "00:00:00 PST.", 190, subcode=463, status=self.auth_error_status)
        if token not in self.valid_tokens:
            message = "Invalid OAuth access token - Cannot parse access token"
            return graph_error(message, 190, status=self.auth_error_status,
                               headers={"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'})
        return None

    def _post_events(self, pixel: dict[str, Any], params: dict[str, Any]) -> Response:
        data = params.get("data")
        if isinstance(data, str):  # form posts carry `data` as a JSON-encoded string
            try:
                data = json.loads(data)
            except ValueError:
                return graph_error("(#100) param data must be an array.", 100)
        problem = _validate_events(data)
        if problem is not None or not isinstance(data, list):
            return graph_error("Invalid parameter", 100, error_user_title="Invalid event",
                               error_user_msg=problem or "data must be an array")
        trace = _trace_id()
        self._batches.append({"pixel_id": pixel["id"], "data": data, "fbtrace_id": trace,
                              "test_event_code": params.get("test_event_code")})
        pixel["last_fired_time"] = meta_time()
        return json_response({"events_received": len(data), "messages": [], "fbtrace_id": trace})

    def rate_limited_response(self, retry_after: float) -> Response:
        # Graph API does not use 429: throttling is error code 4 (app) or 17 (user) with HTTP 400.
        usage = json.dumps({"call_count": 100, "total_cputime": 100, "total_time": 100})
        return graph_error("(#4) Application request limit reached", 4, is_transient=True,
                           headers={"X-App-Usage": usage})

    def server_error_response(self, status: int) -> Response:
        return graph_error("An unexpected error has occurred. Please retry your request later.", 2,
                           status=status, is_transient=True)


def _params(request: Request) -> dict[str, Any]:
    """Graph API merges query string, form body and JSON body parameters."""
    params: dict[str, Any] = dict(request.args.to_dict())
    params.update(request.form.to_dict())
    body = request.get_json(silent=True, force=True) if request.get_data(cache=True) else None
    if isinstance(body, dict):
        params.update(body)
    return params


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") and token.strip() else None


def _no_such_object(object_id: str, verb: str) -> Response:
    return graph_error(f"Unsupported {verb} request. Object with ID '{object_id}' does not exist, cannot be "
                       "loaded due to missing permissions, or does not support this operation. Please read the "
                       "Graph API documentation at https://developers.facebook.com/docs/graph-api",
                       100, type_="GraphMethodException", subcode=33)


def _read_pixel(pixel: dict[str, Any], fields_param: str | None) -> Response:
    wanted = _split_fields(fields_param) if fields_param else ["id", "name"]
    unknown = [name for name in wanted if name not in pixel]
    if unknown:
        return graph_error(f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type (AdsPixel)", 100)
    # Like Graph API: id always comes back; null fields are left out.
    body = {name: pixel[name] for name in ["id", *wanted] if pixel.get(name) is not None}
    return json_response(body)


def _split_fields(fields_param: str) -> list[str]:
    """`id,name,owner_business{id,name}` → ["id", "name", "owner_business"] (sub-selections not applied)."""
    names, depth, current = [], 0, ""
    for char in fields_param:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += char
    names.append(current)
    return [n.split("{", 1)[0].split(".", 1)[0].strip() for n in names if n.strip()]


def _validate_events(data: Any) -> str | None:
    """The checks that make the CAPI reject a whole batch; None when the batch is fine."""
    if not isinstance(data, list) or not data:
        return "The parameter data is required and must be a non-empty array of events."
    if len(data) > MAX_EVENTS_PER_BATCH:
        return f"A batch may hold at most {MAX_EVENTS_PER_BATCH} events."
    now = time.time()
    for index, event in enumerate(data):
        if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
            return f"data[{index}]: event_name is required."
        if not isinstance(event.get("event_time"), int):
            return f"data[{index}]: event_time must be a Unix timestamp in seconds."
        if event["event_time"] < now - MAX_EVENT_AGE_SECONDS:
            return f"data[{index}]: event_time is more than 7 days in the past."
        if not isinstance(event.get("user_data"), dict):
            return f"data[{index}]: user_data is required."
    return None
