"""Hostile input on every route: never a 5xx, and the answer is small and quick.

Every route of the app is called with the path filled by ids the merchant really owns (so the view
goes past its lookups), with a battery of known-bad bodies and query strings, then with arbitrary
JSON from hypothesis (NULs, lone surrogates, deep nesting, huge numbers, long lists).
"""
from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.accounts import signed_in

MAX_BODY = 64 * 1024  # bytes: an error answer names the first few problems and counts the rest
MAX_SECONDS = 5.0
SKIPPED = {"/static/<path:filename>", "/docs", "/openapi.json", "/docs/assets/<path:filename>", "/metrics"}


@pytest.fixture()
def routes(app, client):
    """(method, url, headers) for every route, with ids of rows the signed-in merchant owns."""
    _, headers = signed_in(client)

    def created(url: str, body: dict) -> str:
        response = client.post(url, headers=headers, json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    campaign = created("/api/v1/campaigns", {"name": "Sale"})
    ids = {
        "campaign_id": campaign,
        "channel_id": created(f"/api/v1/campaigns/{campaign}/channels", {
            "channelType": "sms", "config": {"body": "Hi {{ contact.firstName }}"}}),
        "audience_id": created(f"/api/v1/campaigns/{campaign}/audiences",
                               {"name": "all", "definition": {"conditions": []}}),
        "contact_id": created("/api/v1/contacts", {"email": "shopper@example.com"}),
        "conversation_id": created("/api/v1/conversations", {"title": "Q"}),
        "source_id": created("/api/v1/data-sources", {"sourceType": "facebook_pixel", "name": "Pixel",
                                                       "config": {"pixelId": "123456789", "accessToken": "EAAB"}}),
        "suppression_id": created("/api/v1/suppressions", {"kind": "email", "address": "gone@example.com"}),
        "flow_id": created("/api/v1/flows", {"name": "Welcome", "trigger": {"event": "customer_created"}, "steps": [
            {"delaySeconds": 0, "channelType": "sms", "config": {"body": "Welcome {{ contact.firstName }}"}}]}),
        "endpoint_id": created("/api/v1/webhook-endpoints", {"url": "https://hooks.example.com/h",
                                                             "eventTypes": ["message.sent"]}),
        "delivery_id": str(uuid.uuid4()),
        "sender_id": created("/api/v1/senders", {"email": "news@shop.com"}),
        "session_id": str(uuid.uuid4()),
        "api_key_id": str(uuid.uuid4()),
        "channel_type": "sms",
        "token": "x" * 40,
        "code": "x" * 20,  # a short link's code: well formed, so its lookup runs
        "graph_version": "v21.0",  # CAPI at Graph API's path
    }
    # The ingest routes with a real source and its key, so bodies get past authentication.
    from tests.support.sources import make_merchant, make_source

    ingest = {}
    for endpoint, source_type in (("ingest.facebook_pixel", "facebook_pixel"), ("ingest.gtm", "gtm")):
        source, key = make_source(make_merchant(), source_type)
        ingest[endpoint] = ({"source_id": str(source.id)}, {"X-Ingest-Key": key})
    pixel_values, pixel_headers = ingest["ingest.facebook_pixel"]
    ingest["ingest.facebook_pixel_graph"] = ({**pixel_values, "graph_version": ids["graph_version"]}, pixel_headers)
    found = []
    urls = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.rule in SKIPPED:
            continue
        values, rule_headers = ingest.get(rule.endpoint, ({name: ids[name] for name in rule.arguments}, headers))
        url = urls.build(rule.endpoint, values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, url, rule_headers))
    return found


def _check(client, method: str, url: str, headers: dict, **request) -> None:
    started = time.perf_counter()
    response = client.open(url, method=method, headers=headers, **request)
    elapsed = time.perf_counter() - started
    where = f"{method} {url} {str(request)[:200]}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.get_data()[:500]!r}"
    assert len(response.get_data()) <= MAX_BODY, f"{where}: answer of {len(response.get_data())} bytes"
    assert elapsed < MAX_SECONDS, f"{where}: {elapsed:.1f} s"


DEEP = b"[" * 10_000 + b"]" * 10_000
HOSTILE_BODIES = [
    b'{"name": "a\\u0000b", "email": "a\\u0000@example.com", "title": "\\u0000", "content": "\\u0000"}',
    b'{"name": "\\ud800", "email": "\\udfff@example.com", "password": "\\ud800\\ud800\\ud800x", "content": "\\ud800"}',
    b'{"name": "\xff\xfe", "email": "\xc3@example.com"}',
    DEEP,
    b'{"name": ' + DEEP + b"}",
    b'{"name": 1e999, "page": 99999999999999999999999999999999, "limit": -1}',
    b'{"data": [' + b",".join([b'{"event_name": 1}'] * 50_000) + b"]}",
    b'{"events": [' + b",".join([b"{}"] * 50_000) + b"]}",
    b'{"parameters": [' + b",".join([b'"x"'] * 100_000) + b"]}",
    b'{"config": {"body": "{{ \'x\' * 30000000 }}"}, "channelType": "sms"}',
    b'{"definition": {"conditions": [' + b",".join([b'{"type": "attribute"}'] * 20_000) + b"]}}",
]
HOSTILE_QUERIES = ["page=99999999999999999999", "page=-5&page_size=0", "page_size=999999999999",
                   "q=%00", "q=%ED%A0%80", "search=" + "x" * 5000 + "%00", "status=%00&channel=%FF"]


def test_known_hostile_bodies_and_queries_never_fail_the_server(client, routes):
    for method, url, headers in routes:
        for body in HOSTILE_BODIES:
            _check(client, method, url, headers, data=body, content_type="application/json")
        for query in HOSTILE_QUERIES:
            _check(client, method, f"{url}?{query}", headers)


_text = st.one_of(st.text(max_size=20), st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "é" * 3]))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)
_keys = st.sampled_from(["name", "email", "password", "config", "channelType", "definition", "data", "events",
                         "title", "content", "attributes", "consent", "scheduledAt", "conditions", "phone"])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_arbitrary_json_never_fails_the_server(client, routes, data):
    method, url, headers = data.draw(st.sampled_from(routes))
    body = data.draw(st.one_of(_json, st.dictionaries(_keys, _json, max_size=6)))
    raw = json.dumps(body, ensure_ascii=True, allow_nan=True).encode()
    _check(client, method, url, headers, data=raw, content_type="application/json")


def test_chunked_bodies_over_the_limit_are_413(client, app_ctx):
    """No Content-Length (chunked, as gunicorn passes it on with `wsgi.input_terminated`)."""
    from tests.support.sources import make_merchant, make_source

    _, headers = signed_in(client)
    source, key = make_source(make_merchant(), "gtm")
    chunked = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    for url, size, extra in (("/api/v1/campaigns", 2 * 1024 * 1024, headers),
                             (f"/ingest/gtm/{source.id}", 6 * 1024 * 1024, {"X-Ingest-Key": key})):
        body = b'{"name": "' + b"x" * size + b'"}'
        response = client.post(url, headers={**extra, **chunked}, input_stream=io.BytesIO(body),
                               environ_overrides={"wsgi.input_terminated": True})
        assert response.status_code == 413, (url, response.get_json())
    small = client.post("/api/v1/campaigns", headers={**headers, **chunked}, input_stream=io.BytesIO(b'{"name": "ok"}'),
                        environ_overrides={"wsgi.input_terminated": True})
    assert small.status_code == 201
