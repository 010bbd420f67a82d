"""Liveness, readiness (naming the failing dependency), and the API documentation."""
from __future__ import annotations

from tests.conftest import make_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_everything_is_up(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_names_redis_when_it_is_down():
    # Nothing listens on port 1: the same as Redis being stopped, without stopping the shared server.
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "redis": "unreachable"}


def test_readyz_names_the_database_when_it_is_down():
    app = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/herald_test")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "unreachable", "redis": "ok"}


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.get_json()["info"]["title"] == "Herald"
    assert "/readyz" in spec.get_json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert b"swagger" in docs.data.lower()
