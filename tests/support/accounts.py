"""Test helpers that go through the HTTP API like any client."""
from __future__ import annotations

import itertools

from flask.testing import FlaskClient

PASSWORD = "correct horse battery staple"
_counter = itertools.count()


def unique_email(prefix: str = "merchant") -> str:
    return f"{prefix}{next(_counter)}@example.com"


def register(client: FlaskClient, email: str | None = None, password: str = PASSWORD, **extra) -> dict:
    email = email or unique_email()
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client: FlaskClient, email: str, password: str = PASSWORD, **kwargs) -> dict:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password}, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_in(client: FlaskClient, email: str | None = None) -> tuple[dict, dict[str, str]]:
    """Register and log in a fresh merchant: (login body, auth headers)."""
    email = email or unique_email()
    register(client, email)
    tokens = login(client, email)
    return tokens, bearer(tokens["accessToken"])
