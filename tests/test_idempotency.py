"""`Idempotency-Key` on the API's POSTs, through HTTP against the real database: a retry answers what
the first request did and changes nothing again, a different request with the key is 422, a retry
while the first still runs is 409 (also with requests really running at once)."""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg2
import sqlalchemy as sa

from app.extensions import db
from app.models import ApiKey, Campaign, IdempotencyKey, User, utcnow
from app.services import campaigns as campaign_service
from app.services.maintenance import purge_idempotency_keys
from tests.conftest import TEST_DATABASE_URL
from tests.support.accounts import PASSWORD, bearer, signed_in, unique_email

CAMPAIGNS = "/api/v1/campaigns"
REPLAYED = "Idempotent-Replayed"


def _campaigns() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Campaign))


def _with_key(headers: dict, key: str) -> dict:
    return {**headers, "Idempotency-Key": key}


def test_a_retry_answers_the_first_response_and_does_nothing_again(client, app_ctx):
    _, login_headers = signed_in(client)
    headers = _with_key(login_headers, "create-sale-1")
    first = client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert first.status_code == 201 and REPLAYED not in first.headers

    again = client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert again.status_code == 201 and again.headers[REPLAYED] == "true"
    assert again.get_data() == first.get_data()
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert _campaigns() == 1

    # The key belongs to the merchant, whichever credential it comes with.
    key = client.post("/api/v1/api-keys", headers=login_headers,
                      json={"name": "k", "scopes": ["campaigns:write"]}).get_json()["key"]
    by_key = client.post(CAMPAIGNS, headers=_with_key(bearer(key), "create-sale-1"), json={"name": "Sale"})
    assert by_key.status_code == 201 and by_key.get_data() == first.get_data() and by_key.headers[REPLAYED] == "true"
    # ...but only within the credential's scopes.
    read_only = client.post("/api/v1/api-keys", headers=login_headers,
                            json={"name": "r", "scopes": ["read"]}).get_json()["key"]
    assert client.post(CAMPAIGNS, headers=_with_key(bearer(read_only), "create-sale-1"),
                       json={"name": "Sale"}).status_code == 403
    assert _campaigns() == 1


def test_the_same_key_with_a_different_request_is_422(client, app_ctx):
    _, login_headers = signed_in(client)
    headers = _with_key(login_headers, "k-1")
    assert client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"}).status_code == 201
    for url, body in ((CAMPAIGNS, {"name": "Other sale"}), ("/api/v1/contacts", {"name": "Sale"}),
                      (f"{CAMPAIGNS}?draft=1", {"name": "Sale"})):
        refused = client.post(url, headers=headers, json=body)
        assert refused.status_code == 422 and refused.get_json()["code"] == "idempotency_key_reused", url
    assert _campaigns() == 1
    assert client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"}).headers[REPLAYED] == "true"


def test_keys_are_per_merchant_and_posts_without_one_each_act(client, app_ctx):
    _, alice = signed_in(client)
    _, bob = signed_in(client)
    first = client.post(CAMPAIGNS, headers=_with_key(alice, "shared"), json={"name": "Sale"})
    second = client.post(CAMPAIGNS, headers=_with_key(bob, "shared"), json={"name": "Sale"})
    assert first.status_code == second.status_code == 201 and REPLAYED not in second.headers
    assert first.get_json()["id"] != second.get_json()["id"]
    client.post(CAMPAIGNS, headers=alice, json={"name": "Sale"})
    client.post(CAMPAIGNS, headers=alice, json={"name": "Sale"})
    assert _campaigns() == 4


def test_a_4xx_answer_is_kept(client, app_ctx):
    _, login_headers = signed_in(client)
    invalid = client.post(CAMPAIGNS, headers=_with_key(login_headers, "bad"), json={"name": ""})
    assert invalid.status_code == 422
    replayed = client.post(CAMPAIGNS, headers=_with_key(login_headers, "bad"), json={"name": ""})
    assert replayed.status_code == 422 and replayed.headers[REPLAYED] == "true"
    assert replayed.get_json() == invalid.get_json()

    campaign = client.post(CAMPAIGNS, headers=login_headers, json={"name": "Sale"}).get_json()
    launch = f"{CAMPAIGNS}/{campaign['id']}/launch"
    refused = client.post(launch, headers=_with_key(login_headers, "launch"))  # unverified email: 403
    assert refused.status_code == 403
    assert client.post(launch, headers=_with_key(login_headers, "launch")).headers[REPLAYED] == "true"
    assert _campaigns() == 1


def test_a_5xx_is_not_kept_so_a_retry_runs(client, app_ctx, monkeypatch):
    _, login_headers = signed_in(client)
    real = campaign_service.create_campaign
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the first attempt breaks")
        return real(*args, **kwargs)

    monkeypatch.setattr(campaign_service, "create_campaign", fails_once)
    headers = _with_key(login_headers, "flaky")
    assert client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"}).status_code == 500
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdempotencyKey)) == 0
    retried = client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert retried.status_code == 201 and REPLAYED not in retried.headers
    assert client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"}).headers[REPLAYED] == "true"
    assert _campaigns() == 1 and len(calls) == 2


def test_a_malformed_key_is_400(client, app_ctx):
    _, login_headers = signed_in(client)
    for key in ("x" * 256, "with space", ""):
        response = client.post(CAMPAIGNS, headers=_with_key(login_headers, key), json={"name": "Sale"})
        assert (response.status_code, response.get_json()["code"]) == (400, "invalid_idempotency_key"), key
    assert _campaigns() == 0
    assert client.post(CAMPAIGNS, headers=_with_key(login_headers, "x" * 255), json={"name": "Sale"}).status_code == 201


def test_unauthenticated_posts_ignore_the_key(client, app_ctx):
    """No merchant to scope a key to; registering an address twice still makes one account."""
    body = {"email": unique_email(), "password": PASSWORD}
    headers = {"Idempotency-Key": "signup"}
    assert client.post("/api/v1/auth/register", headers=headers, json=body).status_code == 201
    again = client.post("/api/v1/auth/register", headers=headers, json=body)
    assert again.status_code == 201 and REPLAYED not in again.headers
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == body["email"])) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdempotencyKey)) == 0


def test_a_replayed_key_creation_is_sealed_at_rest(client, app_ctx):
    """An answer may carry a secret shown once (a new API key, an ingest key): kept encrypted."""
    _, login_headers = signed_in(client)
    headers = _with_key(login_headers, "new-key")
    body = {"name": "ci", "scopes": ["read"]}
    first = client.post("/api/v1/api-keys", headers=headers, json=body)
    again = client.post("/api/v1/api-keys", headers=headers, json=body)
    assert again.headers[REPLAYED] == "true" and again.get_json()["key"] == first.get_json()["key"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 1
    stored = db.session.scalars(sa.select(IdempotencyKey)).one()
    assert first.get_json()["key"].encode() not in stored.response_body
    assert b"hk_live_" not in stored.response_body


def test_expired_records_and_abandoned_claims_free_the_key(client, app_ctx):
    tokens, login_headers = signed_in(client)
    user_id = uuid.UUID(tokens["user"]["id"])
    headers = _with_key(login_headers, "old")
    assert client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"}).status_code == 201
    record = IdempotencyKey.user_id == user_id

    # Still running (a claim, no answer yet): 409.
    db.session.execute(sa.update(IdempotencyKey).where(record).values(
        response_status=None, locked_until=sa.func.now() + timedelta(minutes=1)))
    db.session.commit()
    busy = client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert busy.status_code == 409 and busy.get_json()["code"] == "idempotency_key_in_use"
    # Its request died: once the lease is over a retry runs.
    db.session.execute(sa.update(IdempotencyKey).where(record).values(locked_until=sa.func.now() - timedelta(seconds=1)))
    db.session.commit()
    rerun = client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert rerun.status_code == 201 and REPLAYED not in rerun.headers
    # Past 24 hours the key is new again, even with another body.
    db.session.execute(sa.update(IdempotencyKey).where(record).values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
    db.session.commit()
    fresh = client.post(CAMPAIGNS, headers=headers, json={"name": "Another"})
    assert fresh.status_code == 201 and REPLAYED not in fresh.headers
    assert _campaigns() == 3


def test_the_daily_purge_forgets_records_past_24_hours(client, app_ctx):
    tokens, login_headers = signed_in(client)
    for key in ("a", "b", "c"):
        client.post(CAMPAIGNS, headers=_with_key(login_headers, key), json={"name": key})
    now = utcnow()
    db.session.execute(sa.update(IdempotencyKey).where(IdempotencyKey.key.in_(["a", "b"]))
                       .values(created_at=now - timedelta(hours=25)))
    db.session.commit()
    assert purge_idempotency_keys(now=now, batch_size=1) == 2
    assert db.session.scalars(sa.select(IdempotencyKey.key)).all() == ["c"]


# --- Requests really running at once (committed rows, one connection each) --------------------

def test_a_retry_while_the_first_runs_is_409_then_gets_the_first_answer(app, live_client):
    _, login_headers = signed_in(live_client)
    headers = _with_key(login_headers, "slow")
    blocker = psycopg2.connect(TEST_DATABASE_URL)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE campaigns IN SHARE MODE")  # the first request's INSERT waits on it
            answers: dict = {}
            first = threading.Thread(target=lambda: answers.update(
                first=app.test_client().post(CAMPAIGNS, headers=headers, json={"name": "Sale"})))
            first.start()
            _wait_for(lambda: _waiting_on_campaigns(cur))
            busy = live_client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
            assert busy.status_code == 409 and busy.get_json()["code"] == "idempotency_key_in_use"
        blocker.rollback()
        first.join(timeout=30)
    finally:
        blocker.close()
    assert answers["first"].status_code == 201 and REPLAYED not in answers["first"].headers
    retried = live_client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})
    assert retried.status_code == 201 and retried.get_data() == answers["first"].get_data()
    with app.app_context():
        assert _campaigns() == 1


def test_requests_at_once_with_one_key_run_once(app, live_client):
    _, login_headers = signed_in(live_client)
    headers = _with_key(login_headers, "burst")
    at_once = 6
    barrier = threading.Barrier(at_once)

    def post(_):
        client = app.test_client()
        barrier.wait()
        return client.post(CAMPAIGNS, headers=headers, json={"name": "Sale"})

    with ThreadPoolExecutor(at_once) as pool:
        responses = list(pool.map(post, range(at_once)))
    originals = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    assert len(originals) == 1, [(r.status_code, r.get_json()) for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.get_json()["code"] == "idempotency_key_in_use"
        else:
            assert response.status_code == 201 and response.get_data() == originals[0].get_data()
    with app.app_context():
        assert _campaigns() == 1


def _waiting_on_campaigns(cur) -> bool:
    cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'campaigns'::regclass")
    return cur.fetchone()[0] > 0


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the first request never reached the campaigns table"
        time.sleep(0.02)
