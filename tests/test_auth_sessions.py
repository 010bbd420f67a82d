"""Login, refresh rotation and reuse detection, logout, sessions, throttling — through HTTP."""
from __future__ import annotations

import hashlib
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import TokenBlacklist, User, UserSession, utcnow
from tests.conftest import make_app
from tests.support.accounts import (
    PASSWORD,
    bearer,
    login,
    register,
    signed_in,
    unique_email,
)

ME = "/api/v1/users/me"


def _session(session_id: str) -> UserSession:
    db.session.expire_all()
    return db.session.get(UserSession, uuid.UUID(session_id))


def _claims(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def test_login_answers_tokens_and_records_the_session(client, app_ctx):
    email = unique_email()
    register(client, email)
    body = login(client, email.upper(), headers={"User-Agent": "pytest-agent/1.0"})
    assert body["tokenType"] == "Bearer" and body["expiresIn"] == 900
    assert body["user"]["email"] == email and "passwordHash" not in body["user"]

    claims = _claims(body["accessToken"])
    assert claims["exp"] - claims["iat"] == 900
    session_id, secret = body["refreshToken"].split(".", 1)
    assert len(secret) >= 43  # 256 bits, url-safe base64
    row = _session(session_id)
    assert row.access_token_jti == claims["jti"] and claims["sid"] == session_id
    assert row.refresh_token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert row.ip_address == "127.0.0.1" and row.user_agent == "pytest-agent/1.0"
    assert abs(row.expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
    assert row.user.last_login_at is not None
    assert client.get(ME, headers=bearer(body["accessToken"])).status_code == 200


def test_wrong_password_and_unknown_account_look_the_same(client, app_ctx):
    email = unique_email()
    register(client, email)

    def attempt(address: str) -> tuple[dict, float]:
        started = time.perf_counter()
        response = client.post("/api/v1/auth/login", json={"email": address, "password": "wrong password!"})
        assert response.status_code == 401
        return response.get_json(), time.perf_counter() - started

    known = [attempt(email) for _ in range(3)]
    unknown = [attempt(unique_email("nobody")) for _ in range(3)]
    assert known[0][0] == unknown[0][0]
    # Both pay for one argon2 verification; without the dummy hash the unknown path is ~100x faster.
    ratio = statistics.median(t for _, t in unknown) / statistics.median(t for _, t in known)
    assert ratio > 0.3


def _login_from(client, address: str, email: str, password: str):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_the_owner_logs_in_while_an_attackers_guesses_are_throttled(client, app_ctx):
    email = unique_email()
    register(client, email)
    for _ in range(5):
        guess = _login_from(client, "198.51.100.7", email, "nope nope nope")
        assert guess.status_code == 401 and "Retry-After" not in guess.headers
    blocked = _login_from(client, "198.51.100.7", email, "another guess!")
    assert blocked.status_code == 429 and 0 < int(blocked.headers["Retry-After"]) <= 60
    assert blocked.get_json()["code"] == "too_many_requests"
    # Past the limit not even the right password is tried from there: guessing on learns nothing.
    assert _login_from(client, "198.51.100.7", email, PASSWORD).status_code == 429

    owner = _login_from(client, "203.0.113.20", email, PASSWORD)
    assert owner.status_code == 200 and "Retry-After" not in owner.headers
    # The attacker's address may still log in to another account.
    other = unique_email()
    register(client, other)
    assert _login_from(client, "198.51.100.7", other, PASSWORD).status_code == 200


def test_many_addresses_guessing_one_account_are_slowed_and_the_owner_still_gets_in(app, committed_db):
    client = make_app(LOGIN_RATE_LIMIT_ACCOUNT="6 per hour").test_client()
    email = unique_email()
    register(client, email)
    for attacker in range(6):
        assert _login_from(client, f"198.51.100.{attacker}", email, "guess guess guess").status_code == 401
    # The account is past its ceiling: every address now gets one try a minute on it, not five.
    assert _login_from(client, "198.51.100.0", email, "guess guess guess").status_code == 429
    assert _login_from(client, "198.51.100.99", email, "guess guess guess").status_code == 401
    slowed = _login_from(client, "198.51.100.99", email, "guess guess guess")
    assert slowed.status_code == 429 and 0 < int(slowed.headers["Retry-After"]) <= 60
    # The owner, arriving from an address of their own, is let in at the first try.
    assert _login_from(client, "203.0.113.20", email, PASSWORD).status_code == 200


def test_a_successful_login_forgives_the_owners_own_typos(client, app_ctx):
    email = unique_email()
    register(client, email)
    for _ in range(4):
        assert _login_from(client, "203.0.113.20", email, "typo typo typo").status_code == 401
    assert _login_from(client, "203.0.113.20", email, PASSWORD).status_code == 200
    for _ in range(5):
        assert _login_from(client, "203.0.113.20", email, "typo typo typo").status_code == 401
    assert _login_from(client, "203.0.113.20", email, PASSWORD).status_code == 429


def test_login_is_throttled_per_ip(app):
    tight = make_app(LOGIN_RATE_LIMIT_IP="3 per minute")
    client = tight.test_client()
    for _ in range(3):
        response = client.post("/api/v1/auth/login", json={"email": unique_email(), "password": "whatever12345"})
        assert response.status_code == 401
    response = client.post("/api/v1/auth/login", json={"email": unique_email(), "password": "whatever12345"})
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_logins_go_on_while_the_throttles_redis_is_down(app, committed_db):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    email = unique_email()
    register(client, email)
    assert client.post("/api/v1/auth/login", json={"email": email, "password": "wrong wrong"}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("proxy_count, expected", [("0", "127.0.0.1"), ("1", "203.0.113.9")])
def test_client_ip_honours_only_the_configured_proxies(app, committed_db, proxy_count, expected):
    client = make_app(PROXY_COUNT=proxy_count).test_client()
    email = unique_email()
    register(client, email)
    body = login(client, email, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
    with app.app_context():
        assert _session(body["refreshToken"].split(".")[0]).ip_address == expected


def test_refresh_rotates_and_reuse_revokes_the_session(client, app_ctx):
    first, _ = signed_in(client)
    second = client.post("/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert second.status_code == 200
    second = second.get_json()
    assert second["refreshToken"] != first["refreshToken"] and second["accessToken"] != first["accessToken"]
    assert second["refreshToken"].split(".")[0] == first["refreshToken"].split(".")[0]  # same session
    # The rotated-away access token is dead; the new one works.
    assert client.get(ME, headers=bearer(first["accessToken"])).status_code == 401
    assert client.get(ME, headers=bearer(second["accessToken"])).status_code == 200

    replay = client.post("/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert replay.status_code == 401
    row = _session(first["refreshToken"].split(".")[0])
    assert row.is_revoked
    assert db.session.scalar(sa.select(TokenBlacklist).where(TokenBlacklist.jti == row.access_token_jti))
    # The newest tokens of that session stop working too.
    assert client.get(ME, headers=bearer(second["accessToken"])).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refreshToken": second["refreshToken"]}).status_code == 401


@pytest.mark.parametrize("token", ["garbage", "not-a-uuid.secret",
                                   pytest.param(f"{uuid.uuid4()}.secret", id="unknown-session"), "", "a" * 600])
def test_bad_refresh_tokens(client, app_ctx, token):
    response = client.post("/api/v1/auth/refresh", json={"refreshToken": token})
    assert response.status_code in (401, 422)
    assert response.is_json


def test_logout_blacklists_the_token_until_its_expiry(client, app_ctx):
    tokens, headers = signed_in(client)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get(ME, headers=headers).status_code == 401
    claims = _claims(tokens["accessToken"])
    entry = db.session.scalar(sa.select(TokenBlacklist).where(TokenBlacklist.jti == claims["jti"]))
    assert entry.expires_at == datetime.fromtimestamp(claims["exp"], UTC).replace(tzinfo=None)
    assert _session(tokens["refreshToken"].split(".")[0]).is_revoked
    assert client.post("/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]}).status_code == 401


def test_logout_all(client, app_ctx):
    email = unique_email()
    register(client, email)
    a, b = login(client, email), login(client, email)
    assert client.post("/api/v1/auth/logout-all", headers=bearer(a["accessToken"])).status_code == 204
    for tokens in (a, b):
        assert client.get(ME, headers=bearer(tokens["accessToken"])).status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TokenBlacklist)) == 2


def test_sessions_list_marks_the_current_one_and_hides_secrets(client, app_ctx):
    email = unique_email()
    register(client, email)
    a, b = login(client, email), login(client, email)
    response = client.get("/api/v1/auth/sessions", headers=bearer(b["accessToken"]))
    assert response.status_code == 200
    assert json.loads(response.headers["X-Pagination"])["total"] == 2
    listed = response.get_json()
    assert {s["id"] for s in listed} == {a["refreshToken"].split(".")[0], b["refreshToken"].split(".")[0]}
    assert [s["current"] for s in listed if s["id"] == b["refreshToken"].split(".")[0]] == [True]
    assert all(not {"refreshTokenHash", "accessTokenJti"} & set(s) for s in listed)


def test_revoke_one_session_and_not_another_users(client, app_ctx):
    email = unique_email()
    register(client, email)
    a, b = login(client, email), login(client, email)
    _, stranger = signed_in(client)
    b_id = b["refreshToken"].split(".")[0]
    assert client.delete(f"/api/v1/auth/sessions/{b_id}", headers=stranger).status_code == 404
    assert client.get(ME, headers=bearer(b["accessToken"])).status_code == 200
    assert client.delete(f"/api/v1/auth/sessions/{b_id}", headers=bearer(a["accessToken"])).status_code == 204
    assert client.get(ME, headers=bearer(b["accessToken"])).status_code == 401
    assert client.get(ME, headers=bearer(a["accessToken"])).status_code == 200
    assert client.delete(f"/api/v1/auth/sessions/{uuid.uuid4()}", headers=bearer(a["accessToken"])).status_code == 404
    assert client.delete("/api/v1/auth/sessions/not-a-uuid", headers=bearer(a["accessToken"])).status_code == 404


def _forge(app, claims: dict, key: str | None = None, algorithm: str = "HS256") -> str:
    return pyjwt.encode(claims, key or app.config["JWT_SECRET_KEY"], algorithm=algorithm)


def test_every_bad_access_token_is_401(app, client, app_ctx):
    tokens, headers = signed_in(client)
    claims = _claims(tokens["accessToken"])
    none_alg = pyjwt.encode(claims, key=None, algorithm="none")
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {tokens['accessToken']}"},
        "malformed": bearer("abc.def"),
        "bad signature": bearer(_forge(app, claims, key="k" * 40)),
        "alg none": bearer(none_alg),
        "alg HS512": bearer(_forge(app, claims, algorithm="HS512")),
        "expired": bearer(_forge(app, {**claims, "exp": int(time.time()) - 10})),
        "refresh token as access": bearer(tokens["refreshToken"]),
        "no session claim": bearer(_forge(app, {k: v for k, v in claims.items() if k != "sid"})),
        "other user's subject": bearer(_forge(app, {**claims, "sub": str(uuid.uuid4())})),
        "refresh-type jwt": bearer(_forge(app, {**claims, "type": "refresh"})),
    }
    for name, case_headers in cases.items():
        response = client.get(ME, headers=case_headers)
        assert response.status_code == 401, name
        assert response.is_json and response.get_json()["status"] == 401, name
    assert client.get(ME, headers=headers).status_code == 200


def test_blacklisted_jti_and_deleted_user_are_refused(client, app_ctx):
    tokens, headers = signed_in(client)
    claims = _claims(tokens["accessToken"])
    db.session.add(TokenBlacklist(jti=claims["jti"], user_id=uuid.UUID(claims["sub"]),
                                  expires_at=utcnow() + timedelta(minutes=15)))
    db.session.commit()
    assert client.get(ME, headers=headers).status_code == 401

    tokens, headers = signed_in(client)
    db.session.execute(sa.delete(User).where(User.id == uuid.UUID(_claims(tokens["accessToken"])["sub"])))
    db.session.commit()
    assert client.get(ME, headers=headers).status_code == 401
