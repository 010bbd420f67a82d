"""Google Tag Manager connector: verify that the token can read the configured container.

`GET {base}/tagmanager/v2/accounts/{accountId}/containers/{apiContainerId}` with `Authorization: Bearer`
(the API's numeric ids); the container it answers must be the one the source names (`containerId`,
the GTM-XXXXXXX id merchants see, which the API calls `publicId`).
Google answers 401 for a bad token, 403 for a token without the tagmanager.readonly scope, and 404
("Not found or permission denied") for an unknown container; 429 and 5xx are worth retrying.
"""
from __future__ import annotations

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

PROVIDER = "Google Tag Manager API"
CONTAINER_FIELDS = ("containerId", "publicId", "name", "usageContext")


def verify_container(config: dict[str, Any], *, base_url: str, policy: RetryPolicy) -> dict[str, Any]:
    """`{"container": {containerId, publicId, name, usageContext}}` when the container is readable."""
    account_id = str(config.get("accountId") or "").strip()
    container_id = str(config.get("apiContainerId") or "").strip()
    if not (account_id.isdigit() and container_id.isdigit()):
        raise SourceRejected("accountId and apiContainerId must be the numeric ids the Tag Manager API uses.")
    token = config.get("accessToken")
    if not token:
        raise CredentialsRejected("No Google access token is configured.")
    url = f"{base_url.rstrip('/')}/tagmanager/v2/accounts/{quote(account_id)}/containers/{quote(container_id)}"
    with requests.Session() as session:
        response = send(session, "GET", url, provider=PROVIDER, policy=policy,
                        headers={"Authorization": f"Bearer {token}"})
    body = json_body(response)
    if response.status_code == 200 and isinstance(body, dict):
        _require_same_container(config, body)
        return {"container": {name: body.get(name) for name in CONTAINER_FIELDS}}
    if response.status_code == 404:
        raise SourceRejected(f"GTM container not found: account {account_id}, container {container_id} "
                             "(or the token's account cannot see it).")
    raise ProviderError(f"Google Tag Manager answered HTTP {response.status_code}: {_message(body)}")


def _require_same_container(config: dict[str, Any], body: dict[str, Any]) -> None:
    expected, found = config.get("containerId"), body.get("publicId")
    if expected and found and str(found).upper() != str(expected).upper():
        raise SourceRejected(f"The Tag Manager API's container {config.get('apiContainerId')} is {found}, "
                             f"not {expected}: check apiContainerId.")


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message")) if isinstance(error, dict) else "no details"
