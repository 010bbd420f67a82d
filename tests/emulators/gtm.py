"""Emulator of the Google Tag Manager API v2 (read side), as a GTM data source uses it.

- `GET /tagmanager/v2/accounts/{accountId}/containers`                       `{"container": [...]}`
- `GET /tagmanager/v2/accounts/{accountId}/containers/{containerId}`         a Container resource
- `GET /tagmanager/v2/accounts/{accountId}/containers/{containerId}/versions:live`  the live ContainerVersion

Auth is `Authorization: Bearer <token>`. Errors use Google's envelope
`{"error": {"code", "message", "errors": [...], "status"}}` (401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
404 NOT_FOUND, 429 RESOURCE_EXHAUSTED). Like Google's JSON, empty lists are left out of bodies.
"""
from __future__ import annotations

import copy
import re
import secrets
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, json_response

_PATH = re.compile(r"/tagmanager/v2/accounts/(?P<account>[^/]+)/containers"
                   r"(?:/(?P<container>[^/:]+)(?P<live>/versions:live)?)?")
_CREDENTIALS_HINT = ("Expected OAuth 2 access token, login cookie or other valid authentication credential. "
                     "See https://developers.google.com/identity/sign-in/web/devconsole-project.")
_STATUS_NAMES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def google_error(code: int, message: str, reason: str, headers: dict[str, str] | None = None,
                 **detail: str) -> Response:
    return json_response({"error": {"code": code, "message": message,
                                    "errors": [{"message": message, "domain": "global", "reason": reason, **detail}],
                                    "status": _STATUS_NAMES.get(code, "UNKNOWN")}}, code, headers)


def _fingerprint() -> str:
    return str(int(time.time() * 1000))  # GTM fingerprints are storage-time milliseconds


class GtmEmulator(EmulatorServer):
    """GTM accounts and containers behind a real HTTP Tag Manager API."""

    def __init__(self, valid_tokens: set[str] | None = None, *, forbidden_tokens: set[str] | None = None) -> None:
        super().__init__()
        self.valid_tokens: set[str] = set(valid_tokens) if valid_tokens is not None else {"gtm_test_token"}
        # Valid tokens that lack the tagmanager.readonly scope: Google answers 403 for them.
        self.forbidden_tokens: set[str] = set(forbidden_tokens or ())
        self._containers: dict[tuple[str, str], dict[str, Any]] = {}
        self._tags: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # -- data helpers ----------------------------------------------------------------------
    def add_container(self, account_id: str = "6001234567", container_id: str | None = None, *,
                      public_id: str | None = None, name: str = "Herald Server Container",
                      usage_context: tuple[str, ...] = ("server",), **extra: Any) -> dict[str, Any]:
        """Add a container; ids default to random digits and `GTM-XXXXXXX`. `extra` sets raw fields."""
        container_id = container_id or str(secrets.randbelow(9 * 10**8) + 10**8)
        public_id = public_id or "GTM-" + secrets.token_hex(4).upper()[:7]
        path = f"accounts/{account_id}/containers/{container_id}"
        container = {"path": path, "accountId": account_id, "containerId": container_id, "name": name,
                     "publicId": public_id, "usageContext": list(usage_context), "fingerprint": _fingerprint(),
                     "tagManagerUrl": f"https://tagmanager.google.com/#/container/{path}/workspaces?apiLink=container",
                     "features": {"supportTags": True, "supportTriggers": True, "supportVariables": True},
                     **extra}
        with self.lock:
            self._containers[(account_id, container_id)] = container
            self._tags.setdefault((account_id, container_id), [])
            return copy.deepcopy(container)

    def add_tag(self, account_id: str, container_id: str, name: str, tag_type: str = "gaawe",
                **extra: Any) -> dict[str, Any]:
        """Add a tag to the container's live (published) version."""
        with self.lock:
            tags = self._tags[(account_id, container_id)]
            tag = {"accountId": account_id, "containerId": container_id, "tagId": str(len(tags) + 1),
                   "name": name, "type": tag_type, "fingerprint": _fingerprint(), **extra}
            tags.append(tag)
            return copy.deepcopy(tag)

    # -- HTTP ----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None or request.method != "GET":
            return google_error(404, "Requested entity was not found.", "notFound")
        auth_failure = self._check_token(request)
        if auth_failure is not None:
            return auth_failure
        account, container_id = match["account"], match["container"]
        with self.lock:
            if container_id is None:
                return self._list(account)
            container = self._containers.get((account, container_id))
            if container is None:
                return google_error(404, "Not found or permission denied.", "notFound")
            if match["live"]:
                return json_response(self._live_version(container))
            return json_response(container)

    def _check_token(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else request.args.get("access_token", "")
        challenge = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
        if not token:
            return google_error(401, "Request is missing required authentication credential. " + _CREDENTIALS_HINT,
                                "required", challenge, location="Authorization", locationType="header")
        if token in self.forbidden_tokens:
            return google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions")
        if token not in self.valid_tokens:
            challenge["WWW-Authenticate"] += ', error="invalid_token"'
            return google_error(401, "Request had invalid authentication credentials. " + _CREDENTIALS_HINT,
                                "authError", challenge, location="Authorization", locationType="header")
        return None

    def _list(self, account: str) -> Response:
        containers = [c for (acc, _), c in self._containers.items() if acc == account]
        if not containers:
            return google_error(404, "Not found or permission denied.", "notFound")
        return json_response({"container": containers})

    def _live_version(self, container: dict[str, Any]) -> dict[str, Any]:
        account, container_id = container["accountId"], container["containerId"]
        version = {"path": f"{container['path']}/versions/1", "accountId": account, "containerId": container_id,
                   "containerVersionId": "1", "name": "Published", "container": container,
                   "fingerprint": _fingerprint()}
        tags = self._tags.get((account, container_id)) or []
        if tags:  # Google omits empty repeated fields
            version["tag"] = tags
        return version

    def rate_limited_response(self, retry_after: float) -> Response:
        # Google sends no Retry-After here; clients back off exponentially.
        return google_error(429, "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per "
                                 "user' of service 'tagmanager.googleapis.com'.", "rateLimitExceeded")

    def server_error_response(self, status: int) -> Response:
        if status in (500, 503):
            message = "Internal error encountered." if status == 500 else "The service is currently unavailable."
            return google_error(status, message, "backendError")
        return super().server_error_response(status)
