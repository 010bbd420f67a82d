"""Operator commands on the `flask` CLI: `flask users create` and `flask demo`, against the real database."""
from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import EmailVerification, User
from tests.support.accounts import PASSWORD, bearer, login


def _user(email: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.email == email))


def test_users_create_verified_makes_an_account_that_can_log_in_verified(app, client, app_ctx):
    result = app.test_cli_runner().invoke(args=["users", "create", "ops@example.com", "--password", PASSWORD,
                                                "--first-name", "Ada", "--verified"])
    assert result.exit_code == 0, result.output
    assert "created ops@example.com (verified)" in result.output
    body = login(client, "ops@example.com")
    assert body["user"]["isVerified"] is True and body["user"]["firstName"] == "Ada"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EmailVerification)) == 0


def test_users_create_without_verified_queues_the_verification_mail(app, app_ctx):
    # The password is asked for, twice, when not given.
    result = app.test_cli_runner().invoke(args=["users", "create", "new@example.com"],
                                          input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "verification mail queued" in result.output
    user = _user("new@example.com")
    assert user.is_verified is False
    assert db.session.scalar(sa.select(EmailVerification.user_id)) == user.id


def test_users_create_refuses_weak_passwords_bad_addresses_and_taken_ones(app, app_ctx):
    runner = app.test_cli_runner()
    weak = runner.invoke(args=["users", "create", "weak@example.com", "--password", "password123"])
    assert weak.exit_code == 1 and "password" in weak.output and _user("weak@example.com") is None
    bad = runner.invoke(args=["users", "create", "not-an-address", "--password", PASSWORD])
    assert bad.exit_code == 1 and "email" in bad.output
    assert runner.invoke(args=["users", "create", "taken@example.com", "--password", PASSWORD]).exit_code == 0
    taken = runner.invoke(args=["users", "create", "TAKEN@example.com", "--password", PASSWORD, "--verified"])
    assert taken.exit_code == 1 and "exists already" in taken.output


def test_demo_loads_a_merchant_whose_draft_campaign_sends(app, live_client, celery_worker, smtp_sink):
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    password = re.search(r"login\s+demo@example\.com\s+password (\S+)", result.output).group(1)
    campaign_id = re.search(r"campaign\s+([0-9a-f-]{36})", result.output).group(1)
    source_id = re.search(r"data source\s+([0-9a-f-]{36})", result.output).group(1)
    headers = bearer(login(live_client, "demo@example.com", password)["accessToken"])

    assert len(live_client.get("/api/v1/contacts", headers=headers).get_json()) == 5
    events = live_client.get(f"/api/v1/data-sources/{source_id}/events", headers=headers,
                             query_string={"page_size": 100}).get_json()
    assert len(events) == 20 and {e["status"] for e in events} == {"processed"}
    # The events are tied to the contacts: the shoppers who started checkout without buying.
    preview = live_client.post("/api/v1/audiences/preview", headers=headers, json={"definition": {
        "match": "all", "conditions": [{"type": "event", "event": "checkout_started", "withinDays": 7},
                                       {"type": "event", "event": "order_placed", "withinDays": 7, "negate": True}]}})
    assert preview.get_json()["count"] == 1

    campaign = live_client.get(f"/api/v1/campaigns/{campaign_id}", headers=headers).get_json()
    assert campaign["status"] == "draft"
    launched = live_client.post(f"/api/v1/campaigns/{campaign_id}/launch", headers=headers)
    assert launched.status_code == 200, launched.get_json()
    mails = smtp_sink.wait_for(5, timeout=60)
    assert sorted(rcpt for mail in mails for rcpt in mail.recipients) == [
        "ada@example.com", "alan@example.com", "edsger@example.com", "grace@example.com", "katherine@example.com"]

    again = app.test_cli_runner().invoke(args=["demo"])
    assert again.exit_code == 1 and "exists already" in again.output


def test_bounces_unparsed_lists_kept_mail_with_its_headers_and_show_prints_one(app, app_ctx):
    from app.models import BounceMail

    raw = (b"From: MAILER-DAEMON@mx.mailbox.test\r\nTo: postmaster@bounces.herald.test\r\n"
           b"Subject: Undeliverable: Winter sale\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nSorry, no.\r\n")
    kept = BounceMail(mail_from="", recipients=["postmaster@bounces.herald.test"], raw=raw,
                      reason="not a delivery status notification")
    db.session.add(kept)
    db.session.commit()
    runner = app.test_cli_runner()

    listed = runner.invoke(args=["bounces", "unparsed"])
    assert listed.exit_code == 0, listed.output
    assert str(kept.id) in listed.output and "reason    not a delivery status notification" in listed.output
    assert "to postmaster@bounces.herald.test" in listed.output
    assert "Subject:   Undeliverable: Winter sale" in listed.output and "From:      MAILER-DAEMON" in listed.output
    shown = runner.invoke(args=["bounces", "show", str(kept.id)])
    assert shown.exit_code == 0 and shown.stdout_bytes == raw
    missing = runner.invoke(args=["bounces", "show", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 1 and "retention" in missing.output


def test_bounces_unparsed_says_when_there_is_none(app, app_ctx):
    result = app.test_cli_runner().invoke(args=["bounces", "unparsed", "--limit", "5"])
    assert result.exit_code == 0 and result.output == "no kept bounce mail\n"
