"""Registration and email verification, through HTTP, against real PostgreSQL, Redis, worker and SMTP."""
from __future__ import annotations

import logging
import re
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import EmailVerification, User, utcnow
from app.services import accounts
from tests.conftest import make_app
from tests.support.accounts import PASSWORD, bearer, login, register, unique_email

LINK = re.compile(r"https://herald\.test/verify-email\?token=([A-Za-z0-9_\-]+)")


def _users(email: str) -> list[User]:
    return db.session.scalars(sa.select(User).where(sa.func.lower(User.email) == email.lower())).all()


def test_register_returns_the_user_without_secrets(client, app_ctx):
    body = register(client, "Mixed.Case@Example.com", firstName="Ada", lastName="Lovelace", companyName="Engines")
    assert body["email"] == "Mixed.Case@Example.com"  # stored as given
    assert (body["firstName"], body["lastName"], body["companyName"]) == ("Ada", "Lovelace", "Engines")
    assert body["isVerified"] is False
    assert not {"password", "passwordHash"} & set(body)
    (user,) = _users("mixed.case@example.com")
    # argon2id at or above OWASP's minimum (m=19 MiB, t=2, p=1).
    params = dict(kv.split("=") for kv in user.password_hash.split("$")[3].split(","))
    assert user.password_hash.startswith("$argon2id$v=19$")
    assert int(params["m"]) >= 19456 and int(params["t"]) >= 2 and int(params["p"]) >= 1


def test_duplicate_email_reveals_nothing(client, app_ctx):
    first = register(client, "owner@example.com")
    response = client.post("/api/v1/auth/register", json={"email": "OWNER@example.com", "password": PASSWORD})
    assert response.status_code == 201
    assert set(response.get_json()) == set(first) and response.get_json()["id"] != first["id"]
    assert len(_users("owner@example.com")) == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "password123"}, "password"),
        ({"email": "a@example.com", "password": "1234567890"}, "password"),
        ({"email": "jonathan@example.com", "password": "jonathan-rules-2026"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": 42, "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "isVerified": True}, "isVerified"),
        ({"email": "a@example.com", "password": PASSWORD, "firstName": "x" * 101}, "firstName"),
    ],
)
def test_bad_registrations_are_422_and_write_nothing(client, app_ctx, payload, field):
    response = client.post("/api/v1/auth/register", json=payload)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_malformed_and_oversize_bodies(client, app_ctx):
    assert client.post("/api/v1/auth/register", data="{", content_type="application/json").status_code == 400
    assert client.post("/api/v1/auth/register", json=["a"]).status_code == 422
    huge = {"email": "a@example.com", "password": "x" * (2 * 1024 * 1024)}
    assert client.post("/api/v1/auth/register", json=huge).status_code == 413
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_verification_mail_link_and_single_use(app, live_client, celery_worker, smtp_sink, caplog):
    email = unique_email()
    with caplog.at_level(logging.DEBUG):
        # An attacker-chosen Host header must not shape the link.
        live_client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD},
                    headers={"Host": "evil.example"})
        (mail,) = smtp_sink.wait_for(1)
    assert mail.recipients == (email,) and "Confirm" in mail.message["Subject"]
    token = LINK.search(mail.text()).group(1)
    assert len(token) >= 43
    # Herald's own processes never log it (the SMTP sink's debug log of what it received aside).
    assert not any(token in record.getMessage() for record in caplog.records if record.name != "mail.log")

    verified = live_client.post("/api/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.get_json()["isVerified"] is True
    again = live_client.post("/api/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and again.get_json()["code"] == "invalid_token"
    with app.app_context():
        row = db.session.scalars(sa.select(EmailVerification)).one()
        assert row.token_hash != token and len(row.token_hash) == 64 and row.used_at is not None


def test_expired_or_forged_verification_tokens(app, live_client, celery_worker, smtp_sink):
    email = unique_email()
    register(live_client, email)
    token = LINK.search(smtp_sink.wait_for(1)[0].text()).group(1)
    with app.app_context():
        db.session.execute(sa.update(EmailVerification).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert live_client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 400
    assert live_client.post("/api/v1/auth/verify-email", json={"token": "forged"}).status_code == 400
    assert live_client.post("/api/v1/auth/verify-email", json={}).status_code == 422
    with app.app_context():
        assert _users(email)[0].is_verified is False


def _backdate_verifications(app, email: str, by: timedelta) -> None:
    with app.app_context():
        (user,) = _users(email)
        db.session.execute(
            sa.update(EmailVerification)
            .where(EmailVerification.user_id == user.id)
            .values(created_at=EmailVerification.created_at - by)
        )
        db.session.commit()


def test_resend_kills_the_old_link(app, live_client, celery_worker, smtp_sink):
    email = unique_email()
    register(live_client, email)
    old = LINK.search(smtp_sink.wait_for(1)[0].text()).group(1)
    tokens = login(live_client, email)  # unverified accounts may log in
    _backdate_verifications(app, email, timedelta(minutes=2))
    assert live_client.post("/api/v1/auth/verify-email/resend", headers=bearer(tokens["accessToken"])).status_code == 202
    new = LINK.search(smtp_sink.wait_for(2)[1].text()).group(1)
    assert live_client.post("/api/v1/auth/verify-email", json={"token": old}).status_code == 400
    assert live_client.post("/api/v1/auth/verify-email", json={"token": new}).status_code == 200


def test_resend_is_refused_within_a_minute_of_the_last_link(app, live_client, celery_worker, smtp_sink):
    email = unique_email()
    register(live_client, email)
    smtp_sink.wait_for(1)
    headers = bearer(login(live_client, email)["accessToken"])
    too_soon = live_client.post("/api/v1/auth/verify-email/resend", headers=headers)
    assert too_soon.status_code == 429
    assert too_soon.get_json()["code"] == "too_many_requests"
    assert 0 < int(too_soon.headers["Retry-After"]) <= 60

    _backdate_verifications(app, email, timedelta(seconds=61))
    assert live_client.post("/api/v1/auth/verify-email/resend", headers=headers).status_code == 202
    assert live_client.post("/api/v1/auth/verify-email/resend", headers=headers).status_code == 429
    smtp_sink.wait_for(2)
    time.sleep(0.5)  # a refused resend must not have queued a mail
    assert len(smtp_sink.messages) == 2
    with app.app_context():
        (user,) = _users(email)
        count = db.session.scalar(sa.select(sa.func.count()).where(EmailVerification.user_id == user.id))
    assert count == 1  # the refused requests wrote nothing


def test_duplicate_registration_notifies_the_owner(live_client, celery_worker, smtp_sink):
    email = unique_email()
    register(live_client, email)
    register(live_client, email.upper())
    subjects = sorted(m.message["Subject"] for m in smtp_sink.wait_for(2))
    assert subjects == ["Confirm your email address for Herald", "Someone tried to register with your email address"]


def test_sweep_sends_what_a_lost_message_left_unsent(app, committed_db, smtp_sink):

    with app.app_context():
        user = User(email=unique_email(), password_hash="x")
        db.session.add(user)
        db.session.flush()
        db.session.add(EmailVerification(user_id=user.id, created_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()  # committed, but no task was ever published for it
        assert app.extensions["celery"].tasks["accounts.send_pending_verifications"].apply().get() == 1
        assert app.extensions["celery"].tasks["accounts.send_pending_verifications"].apply().get() == 0
    assert len(smtp_sink.wait_for(1)) == 1


def _verification_id(app, email: str):
    with app.app_context():
        (user,) = _users(email)
        return db.session.scalar(sa.select(EmailVerification.id).where(EmailVerification.user_id == user.id))


def test_a_link_used_the_moment_its_mail_arrives_works(app, live_client, smtp_sink):
    """The link is opened while the sender still waits for the server's answer to DATA (a link
    checker, a fast reader): the token must already be committed by then."""
    answers = []

    def open_link(mail):
        token = LINK.search(mail.text()).group(1)
        answers.append(live_client.post("/api/v1/auth/verify-email", json={"token": token}).status_code)

    smtp_sink.on_data = open_link
    email = unique_email()
    register(live_client, email)
    verification_id = _verification_id(app, email)
    with app.app_context():
        assert accounts.send_verification_email(verification_id) is True
    assert answers == [200]
    with app.app_context():
        (user,) = _users(email)
        row = db.session.get(EmailVerification, verification_id)
        assert user.is_verified and row.used_at is not None and row.sent_at is not None


def test_a_refused_mail_is_sent_again_with_a_link_that_works(app, live_client, smtp_sink):
    refusals = ["451 4.3.0 Try again later"]
    smtp_sink.on_data = lambda mail: refusals.pop() if refusals else None
    email = unique_email()
    register(live_client, email)
    verification_id = _verification_id(app, email)
    with app.app_context():
        with pytest.raises(smtplib.SMTPDataError):
            accounts.send_verification_email(verification_id)
        # The failed attempt released the verification: a retry need not wait for the claim to lapse.
        assert accounts.send_verification_email(verification_id) is True
        assert accounts.send_verification_email(verification_id) is False  # sent: never twice
    (mail,) = smtp_sink.wait_for(1)
    token = LINK.search(mail.text()).group(1)
    assert live_client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200


def test_a_verification_claimed_by_a_worker_that_died_is_sent_by_the_sweep(app, live_client, smtp_sink):
    email = unique_email()
    register(live_client, email)
    verification_id = _verification_id(app, email)
    with app.app_context():
        # What a worker killed between committing the token and recording the mail leaves behind.
        db.session.execute(sa.update(EmailVerification).values(
            token_hash="minted-by-a-dead-worker", expires_at=utcnow() + accounts.VERIFICATION_TTL,
            created_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
        assert accounts.send_verification_email(verification_id) is False  # its claim still holds
        db.session.execute(sa.update(EmailVerification).values(
            expires_at=EmailVerification.expires_at - accounts.VERIFICATION_CLAIM_LEASE))
        db.session.commit()
        assert app.extensions["celery"].tasks["accounts.send_pending_verifications"].apply().get() == 1
    token = LINK.search(smtp_sink.wait_for(1)[0].text()).group(1)
    assert live_client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200


def test_invalid_registrations_do_not_use_up_the_limit(committed_db):
    client = make_app(REGISTER_RATE_LIMIT_IP="2 per hour").test_client()
    for _ in range(3):
        invalid = client.post("/api/v1/auth/register", json={"email": unique_email(), "password": "short"})
        assert invalid.status_code == 422 and "Retry-After" not in invalid.headers
    for _ in range(2):
        created = client.post("/api/v1/auth/register", json={"email": unique_email(), "password": PASSWORD})
        assert created.status_code == 201 and "Retry-After" not in created.headers
    refused = client.post("/api/v1/auth/register", json={"email": unique_email(), "password": PASSWORD})
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 3600


def test_account_mail_is_dated_and_from_one_well_formed_sender(committed_db, smtp_sink):
    # A display name with a comma: written unquoted it would make two senders, one without a domain.
    app = make_app(MAIL_FROM="Herald, Inc. <no-reply@herald.test>")
    client = app.test_client()
    email = unique_email()
    register(client, email)
    register(client, email)
    with app.app_context():
        assert accounts.send_verification_email(_verification_id(app, email))
        accounts.notify_duplicate_registration(_users(email)[0].id)
    for mail in smtp_sink.wait_for(2):
        message = mail.message
        (sender,) = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ("Herald, Inc.", "no-reply@herald.test")
        assert abs(parsedate_to_datetime(message["Date"]) - datetime.now(UTC)) < timedelta(minutes=1)
        assert message["Message-ID"].endswith("@herald.test>")
