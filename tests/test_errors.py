"""Every error is JSON with the same shape; no stack trace leaves the process; request ids flow."""
from __future__ import annotations

import logging

import pytest
from flask import request
from marshmallow import Schema, fields

from tests.conftest import make_app


class _EchoSchema(Schema):
    name = fields.String(required=True)
    count = fields.Integer(required=True)


@pytest.fixture(scope="module")
def error_app():
    """The real app plus two probe routes: one that validates JSON, one that fails."""
    app = make_app()

    @app.post("/probe/echo")
    def echo():
        return _EchoSchema().load(request.get_json())

    @app.get("/probe/boom")
    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    return app


@pytest.fixture()
def error_client(error_app):
    return error_app.test_client()


def _assert_shape(response, status, code):
    assert response.status_code == status
    assert response.is_json
    body = response.get_json()
    assert body["status"] == status and body["code"] == code and body["message"]
    return body


def test_not_found(error_client):
    _assert_shape(error_client.get("/nope"), 404, "not_found")


def test_method_not_allowed(error_client):
    response = error_client.delete("/healthz")
    _assert_shape(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_malformed_json(error_client):
    response = error_client.post("/probe/echo", data=b"{not json", content_type="application/json")
    _assert_shape(response, 400, "bad_request")


def test_validation_error_names_fields(error_client):
    response = error_client.post("/probe/echo", json={"name": 3})
    body = _assert_shape(response, 422, "validation_failed")
    assert set(body["errors"]) == {"name", "count"}


def test_body_over_one_mib(error_client):
    response = error_client.post("/probe/echo", data=b"x" * (1024 * 1024 + 1), content_type="application/json")
    _assert_shape(response, 413, "request_entity_too_large")


def test_unexpected_error_hides_the_trace(error_client, caplog):
    with caplog.at_level(logging.ERROR):
        response = error_client.get("/probe/boom", headers={"X-Request-ID": "req-123"})
    body = _assert_shape(response, 500, "internal_server_error")
    assert "hunter2" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(as_text=True)
    # The operator gets the trace, tagged with the request id.
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert record.request_id == "req-123" and record.exc_info
    assert body["message"]


def test_request_id_is_echoed_or_assigned(error_client):
    assert error_client.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    generated = error_client.get("/healthz", headers={"X-Request-ID": "bad id!"}).headers["X-Request-ID"]
    assert len(generated) == 32 and generated.isalnum()


def test_access_log_has_route_not_raw_path(error_client, caplog):
    with caplog.at_level(logging.INFO, logger="herald.access"):
        error_client.get("/healthz?token=abc")
    record = next(r for r in caplog.records if r.name == "herald.access")
    assert record.path == "/healthz" and record.status == 200 and record.request_id
