"""Schemathesis against the app on a real port: every operation of /openapi.json called with a few
generated requests (valid and invalid), authenticated with a real login token, and every answer
checked against the document (statuses, content types, headers, bodies; no 5xx)."""
from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.support.accounts import PASSWORD, unique_email
from tests.support.servers import serving

pytestmark = pytest.mark.slow

EXAMPLES = 4
# Routes that would end the test's own session or account: their behaviour is tested elsewhere.
SKIPPED = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("DELETE", "/api/v1/users/me"),
    ("POST", "/api/v1/users/me/password"),
}

# Operations whose rules go beyond what JSON Schema can state: there a request the document allows
# may still be refused (422, or 400 for a bad link or signature), with the reason, so schemathesis'
# "schema-valid data is accepted" check does not apply. Every other check still does.
BEYOND_SCHEMA = {
    ("POST", "/api/v1/auth/register"): "the password policy (length, breached passwords); a deliverable-looking address",
    ("POST", "/api/v1/auth/verify-email"): "the token must be a live one",
    ("GET", "/verify-email"): "the token must be a live one",
    ("POST", "/verify-email"): "the token must be a live one",
    ("GET", "/api/v1/contacts"): "a phone number must be a real one (libphonenumber)",
    ("POST", "/api/v1/contacts"): "an email address or a phone number, at least; see PATCH",
    ("PATCH", "/api/v1/contacts/{contact_id}"): "addresses must be real ones: a valid email address, a phone number "
                                                "libphonenumber knows, push keys of the sizes browsers make",
    ("POST", "/api/v1/contacts/import"): "a CSV file needs a header row naming columns",
    ("POST", "/api/v1/data-sources"): "the config's fields depend on sourceType",
    ("PUT", "/api/v1/provider-accounts/{channel_type}"): "the config's fields depend on the channel",
    ("POST", "/api/v1/campaigns/{campaign_id}/channels"): "the config's fields depend on channelType",
    ("POST", "/api/v1/campaigns/{campaign_id}/schedule"): "scheduledAt must be in the future",
    ("POST", "/api/v1/audiences/preview"): "the audience definition's grammar",
    ("POST", "/api/v1/campaigns/{campaign_id}/audiences"): "the audience definition's grammar",
    ("POST", "/api/v1/suppressions"): "the address must be an email address or a phone number, as `kind` says",
    ("POST", "/api/v1/suppressions/import"): "a CSV file needs an address column",
    ("POST", "/hooks/ses"): "a notification signed by Amazon SNS",
    ("PATCH", "/api/v1/data-sources/{source_id}"): "sourceType cannot change",
    ("POST", "/api/v1/campaigns"): "conversationId must name one of the merchant's conversations",
    ("PATCH", "/api/v1/campaigns/{campaign_id}"): "conversationId must name one of the merchant's conversations",
    ("PATCH", "/api/v1/settings"): "timezone must be an IANA zone name",
    ("POST", "/api/v1/webhook-endpoints"): "the URL must be a public https address",
    ("PATCH", "/api/v1/webhook-endpoints/{endpoint_id}"): "the URL must be a public https address",
    ("POST", "/api/v1/senders"): "either an email address or a domain, not both and not neither",
    ("POST", "/api/v1/flows"): "the trigger, filter and exits follow the audience grammar; steps' configs depend on "
                               "channelType",
    ("PATCH", "/api/v1/flows/{flow_id}"): "as POST /api/v1/flows; only a draft's definition may change",
}
# Imports validate each row on its own: invalid rows are reported in a 200 beside the rows taken.
ROW_BY_ROW = {("POST", "/api/v1/contacts/import"), ("POST", "/api/v1/suppressions/import")}

# Text PostgreSQL cannot store (U+0000, lone surrogates) is refused wherever it is in a JSON body
# (app.schemas.json_input), a rule on every string that the document leaves unsaid: valid requests
# are sent without it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def _merchant(base: str, session: requests.Session) -> tuple[dict[str, str], dict[str, str]]:
    """A merchant with one of each resource: (auth headers, path parameters naming them)."""
    email = unique_email("schemathesis")
    assert session.post(f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    login = session.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {login['accessToken']}"}

    def created(path: str, body: dict) -> str:
        response = session.post(f"{base}{path}", json=body, headers=auth)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    campaign = created("/api/v1/campaigns", {"name": "Sale"})
    ids = {
        "campaign_id": campaign,
        "channel_id": created(f"/api/v1/campaigns/{campaign}/channels",
                              {"channelType": "sms", "config": {"body": "Hi {{ contact.firstName }}"}}),
        "audience_id": created(f"/api/v1/campaigns/{campaign}/audiences", {"name": "all", "definition": {"conditions": []}}),
        "contact_id": created("/api/v1/contacts", {"email": "shopper@example.com"}),
        "conversation_id": created("/api/v1/conversations", {"title": "Q"}),
        "source_id": created("/api/v1/data-sources", {"sourceType": "facebook_pixel", "name": "Pixel",
                                                       "config": {"pixelId": "123456789", "accessToken": "EAAB"}}),
        "suppression_id": created("/api/v1/suppressions", {"kind": "email", "address": "gone@example.com"}),
        "session_id": str(uuid.uuid4()),
        "api_key_id": str(uuid.uuid4()),
    }
    return auth, ids


def _exercise(operation, mode: GenerationMode, base: str, session: requests.Session, auth: dict[str, str],
              ids: dict[str, str]) -> None:
    """EXAMPLES generated requests to one operation, each answer checked; raises the failures found."""
    key = (operation.method.upper(), operation.path)
    excluded = [check for check, skipped in ((positive_data_acceptance, key in BEYOND_SCHEMA),
                                              (negative_data_rejection, key in ROW_BY_ROW)) if skipped]
    names = {parameter.name for parameter in operation.path_parameters}
    # The merchant's own rows in the path, so requests reach past the lookups.
    fixed = {name: value for name, value in ids.items() if name in names} or None

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed, headers=auth))
    def call(case) -> None:
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex  # a key names one request; generated ones repeat
        if mode is GenerationMode.POSITIVE:
            case.body = _storable(case.body)
        case.call_and_validate(base_url=base, session=session, headers=auth, excluded_checks=excluded)

    call()


def test_every_operation_conforms_to_the_document(app, committed_db):
    with serving(app) as base, requests.Session() as session:
        auth, ids = _merchant(base, session)
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        failures = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in SKIPPED:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _exercise(operation, mode, base, session, auth, ids)
                except Unsatisfiable:
                    continue  # nothing in the operation to make invalid (no parameters, no body)
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (one report for every operation)
                    failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
        assert not failures, "\n\n".join(failures)
