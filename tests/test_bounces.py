"""Bounces and complaints end to end: campaigns go out through the local SMTP relay with a signed
bounce address per delivery; DSNs and complaint reports are mailed over SMTP to the real `bounces`
process; Amazon SES notifications (signed with a certificate served by a local SNS emulator) and
SendGrid events (ECDSA-signed) reach Herald's own HTTP server. Each marks the right delivery and
contact once; forgeries change nothing."""
from __future__ import annotations

import base64
import dataclasses
import json
import re
import signal
import smtplib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask

from app.channels import sendgrid
from app.extensions import db
from app.models import BounceEvent, BounceMail, Contact, Delivery, Suppression, User
from app.services import bounces, contact_import, contacts, sending
from tests.conftest import TEST_ENV
from tests.support import processes
from tests.support.accounts import signed_in
from tests.support.bounce_reports import (
    SendGridSigner,
    SnsEmulator,
    SnsSigner,
    arf,
    dsn,
    sendgrid_event,
    ses_bounce,
    ses_complaint,
    ses_reject,
    sns_message,
)
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant, verified_sender
from tests.support.processes import ROOT, kill_group, process_env
from tests.support.servers import free_port, serving, wait_for_port
from tests.support.smtp_sink import ReceivedMail

DOMAIN = "bounces.herald.test"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
VERP = re.compile(rf"b\+[a-z2-7]{{26}}\.[a-z2-7]{{16}}@{re.escape(DOMAIN)}")


@pytest.fixture(scope="module")
def bounce_server(app: Flask, tmp_path_factory) -> Iterator[int]:
    """The Procfile's `bounces` process, on a port of its own."""
    port = free_port()
    log = (tmp_path_factory.mktemp("bounces") / "bounces.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.bounce_server"], cwd=ROOT, stdout=log, stderr=log,
                            env=process_env(BOUNCE_DOMAIN=DOMAIN, BOUNCE_SMTP_ADDRESS="127.0.0.1",
                                            BOUNCE_SMTP_PORT=str(port)), start_new_session=True)
    try:
        wait_for_port(port)
        yield port
    finally:
        kill_group(proc, signal.SIGTERM)
        log.close()


@pytest.fixture()
def sns() -> Iterator[SnsEmulator]:
    with SnsEmulator(SnsSigner()) as emulator:
        yield emulator


@pytest.fixture()
def sendgrid_signer() -> SendGridSigner:
    return SendGridSigner()


@pytest.fixture()
def ctx(app: Flask, committed_db: None, smtp_sink, sns: SnsEmulator,
        sendgrid_signer: SendGridSigner) -> Iterator[Flask]:
    """The session app with a bounce domain, the SNS emulator's address allowed for certificates,
    one SES topic and a SendGrid key (settings are frozen: swapped)."""
    original = app.config["HERALD_SETTINGS"]
    app.config["HERALD_SETTINGS"] = dataclasses.replace(
        original, bounce_domain=DOMAIN, ses_sns_topic_arns=(TOPIC,),
        sns_url_pattern=rf"http://127\.0\.0\.1:{sns.port}/.*", sendgrid_webhook_public_key=sendgrid_signer.public_key)
    try:
        with app.app_context():
            yield app
            db.session.remove()
    finally:
        app.config["HERALD_SETTINGS"] = original


@pytest.fixture()
def hooks_url(ctx: Flask) -> Iterator[str]:
    """Herald itself behind a real HTTP server, where providers post their webhooks."""
    with serving(ctx) as url:
        yield url + "/hooks"


# --- Helpers --------------------------------------------------------------------------------------

def _mail_to_bounce_server(port: int, recipient: str, raw: bytes, sender: str = "") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [recipient], raw)  # a bounce's envelope sender is null (<>)


def _sent(sink, campaign_id: uuid.UUID | None = None) -> dict[str, ReceivedMail]:
    """Messages at the relay by recipient (of one campaign's deliveries, when given)."""
    mails = {mail.recipients[0]: mail for mail in sink.messages}
    if campaign_id is None:
        return mails
    ids = {str(i) for i in db.session.scalars(sa.select(Delivery.id).where(Delivery.campaign_id == campaign_id))}
    return {rcpt: mail for rcpt, mail in mails.items() if mail.message["X-Herald-Delivery"] in ids}


def _delivery(address: str, campaign_id: uuid.UUID) -> Delivery:
    db.session.expire_all()
    return db.session.scalars(sa.select(Delivery).where(Delivery.address == address,
                                                        Delivery.campaign_id == campaign_id)).one()


def _consent(user_id: uuid.UUID, email: str) -> tuple[str, str | None]:
    db.session.expire_all()
    contact = db.session.scalars(sa.select(Contact).where(Contact.user_id == user_id,
                                                          sa.func.lower(Contact.email) == email)).one()
    return contact.consent["email"], contact.consent_sources.get("email")


def _events(campaign_id: uuid.UUID) -> list[tuple[str, str, str]]:
    return sorted((row.address, row.kind, row.source) for row in db.session.execute(
        sa.select(Delivery.address, BounceEvent.kind, BounceEvent.source)
        .join(Delivery, Delivery.id == BounceEvent.delivery_id).where(Delivery.campaign_id == campaign_id)))


def _send_in_process(user: User) -> uuid.UUID:
    """An email campaign to all the merchant's contacts, launched and sent here (no worker)."""
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    return campaign.id


def _stats(client, headers, campaign_id) -> dict[str, Any]:
    response = client.get(f"/api/v1/campaigns/{campaign_id}/stats", headers=headers)
    assert response.status_code == 200
    return response.get_json()


def _campaign_through_the_api(client, headers: dict[str, str], emails: list[str]) -> str:
    for email in emails:
        assert client.post("/api/v1/contacts", headers=headers, json={"email": email}).status_code == 201
    campaign_id = client.post("/api/v1/campaigns", headers=headers, json={"name": "Winter sale"}).get_json()["id"]
    channel = client.post(f"/api/v1/campaigns/{campaign_id}/channels", headers=headers, json={
        "channelType": "email", "config": {"fromEmail": "news@shop.com", "fromName": "Shop", "subject": "Sale",
                                           "html": "<p>Our sale</p>", "text": "Our sale"}})
    assert channel.status_code == 201, channel.get_json()
    audience = client.post(f"/api/v1/campaigns/{campaign_id}/audiences", headers=headers,
                           json={"name": "Everyone", "definition": {"match": "all", "conditions": []}})
    assert audience.status_code == 201, audience.get_json()
    return campaign_id


# --- VERP, DSNs and complaint reports through the bounces process -----------------------------------

def test_a_dsn_mailed_to_the_bounce_server_marks_its_delivery_and_contact_once(ctx, smtp_sink, bounce_server):
    client = ctx.test_client()
    tokens, headers = signed_in(client)
    db.session.execute(sa.update(User).where(User.id == uuid.UUID(tokens["user"]["id"])).values(is_verified=True))
    verified_sender(uuid.UUID(tokens["user"]["id"]))
    db.session.commit()
    user_id = uuid.UUID(tokens["user"]["id"])
    emails = ["ada@example.com", "grace@example.com", "alan@example.com"]
    campaign_id = _campaign_through_the_api(client, headers, emails)
    # A worker process, as the Procfile runs it, with the bounce domain.
    with processes.worker(ctx.extensions["celery"], BOUNCE_DOMAIN=DOMAIN):
        assert client.post(f"/api/v1/campaigns/{campaign_id}/launch", headers=headers).status_code == 200
        processes.wait_until(lambda: _stats(client, headers, campaign_id)["status"] == "completed", timeout=60,
                             what="the campaign to be sent")

    sent = {rcpt: mail for rcpt, mail in _sent(smtp_sink).items() if rcpt in emails}
    # Each message's envelope sender is its own signed bounce address; From is the merchant's.
    assert all(VERP.fullmatch(mail.mail_from) for mail in sent.values())
    assert len({mail.mail_from for mail in sent.values()}) == 3
    assert sent["ada@example.com"].message["From"] == "Shop <news@shop.com>"

    for _ in range(2):  # the bounce arrives twice: it counts once
        _mail_to_bounce_server(bounce_server, sent["grace@example.com"].mail_from, dsn(sent["grace@example.com"]))

    bounced = _delivery("grace@example.com", uuid.UUID(campaign_id))
    assert bounced.status == "failed" and "5.1.1" in bounced.error and "User unknown" in bounced.error
    assert _consent(user_id, "grace@example.com") == ("bounced", "provider")
    assert _consent(user_id, "ada@example.com") == ("subscribed", "merchant")
    assert _delivery("ada@example.com", uuid.UUID(campaign_id)).status == "delivered"
    stats = _stats(client, headers, campaign_id)
    channel = stats["channels"][0]
    assert (channel["sentCount"], channel["deliveredCount"], channel["bouncedCount"]) == (3, 3, 1)
    assert (stats["totals"]["bouncedCount"], stats["totals"]["complainedCount"]) == (1, 0)
    assert stats["totals"]["ledger"]["failed"] == 1 and stats["totals"]["rates"]["bounce"] == round(1 / 3, 4)
    assert _events(uuid.UUID(campaign_id)) == [("grace@example.com", "bounce", "mail")]
    assert db.session.scalar(sa.select(sa.func.count(BounceMail.id))) == 0

    # A complaint report from a feedback loop, sent to the address registered with it: the report
    # quotes the message's signed envelope sender.
    for _ in range(2):
        _mail_to_bounce_server(bounce_server, f"fbl@{DOMAIN}", arf(sent["alan@example.com"], f"fbl@{DOMAIN}"))
    assert _consent(user_id, "alan@example.com") == ("complained", "provider")
    assert _delivery("alan@example.com", uuid.UUID(campaign_id)).status == "delivered"
    stats = _stats(client, headers, campaign_id)
    assert (stats["channels"][0]["bouncedCount"], stats["channels"][0]["complainedCount"]) == (1, 1)
    assert stats["totals"]["complainedCount"] == 1

    # The merchant's import cannot resubscribe either of them; a contact's own word still could.
    response = client.post("/api/v1/contacts/import", headers=headers, json=[
        {"email": email, "firstName": "Again", "consent": {"email": "subscribed"}} for email in emails])
    assert response.status_code == 200 and response.get_json()["updated"] == 3
    assert _consent(user_id, "grace@example.com") == ("bounced", "provider")
    assert _consent(user_id, "alan@example.com") == ("complained", "provider")


def test_mail_that_names_no_delivery_is_kept_with_the_reason(ctx, smtp_sink, bounce_server):
    user = verified_merchant()
    add_contacts(user, 1)
    campaign_id = _send_in_process(user)
    (original,) = _sent(smtp_sink).values()
    forged = re.sub(r"\.[a-z2-7]{16}@", ".aaaaaaaaaaaaaaaa@", original.mail_from)
    garbage = b"Subject: hello\r\nFrom: someone@mailbox.test\r\n\r\nJust saying hi, no bounce here.\r\n"

    _mail_to_bounce_server(bounce_server, f"postmaster@{DOMAIN}", garbage, sender="someone@mailbox.test")
    _mail_to_bounce_server(bounce_server, forged, dsn(dataclasses.replace(original, mail_from=forged)))
    _mail_to_bounce_server(bounce_server, f"postmaster@{DOMAIN}",
                           dsn(dataclasses.replace(original, mail_from="news@shop.com")))
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # it relays nothing
        _mail_to_bounce_server(bounce_server, "someone@example.com", garbage)

    kept = db.session.execute(sa.select(BounceMail.recipients, BounceMail.reason, BounceMail.raw)
                              .order_by(BounceMail.received_at)).all()
    assert [(r.recipients, r.reason.split(",")[0].split(" or ")[0]) for r in kept] == [
        ([f"postmaster@{DOMAIN}"], "not a delivery status notification"),
        ([forged], "no signed bounce address"),
        ([f"postmaster@{DOMAIN}"], "no signed bounce address"),
    ]
    assert b"Just saying hi" in kept[0].raw and b"message/delivery-status" in kept[1].raw
    assert _delivery("c0@example.com", campaign_id).status == "delivered"
    assert _consent(user.id, "c0@example.com") == ("subscribed", None)
    assert _events(campaign_id) == []


def test_three_soft_bounces_in_a_row_make_a_hard_one_and_an_open_ends_the_run(ctx, smtp_sink, bounce_server):
    user = verified_merchant()
    add_contacts(user, 1)

    def soft_bounce() -> uuid.UUID:
        smtp_sink.clear()
        campaign_id = _send_in_process(user)
        (original,) = _sent(smtp_sink).values()
        _mail_to_bounce_server(bounce_server, original.mail_from,
                               dsn(original, status="4.2.2", diagnostic="452 4.2.2 Mailbox full"))
        return campaign_id

    first, second = soft_bounce(), soft_bounce()
    # The second message is opened: the address works, the run of soft bounces is over.
    pixel = re.search(r"/t/o/[A-Za-z0-9_-]+", _sent(smtp_sink)["c0@example.com"].html()).group(0)
    assert ctx.test_client().get(pixel).status_code == 200
    third, fourth = soft_bounce(), soft_bounce()
    assert _consent(user.id, "c0@example.com") == ("subscribed", None)
    fifth = soft_bounce()
    assert _consent(user.id, "c0@example.com") == ("bounced", "provider")
    for campaign_id in (first, second, third, fourth):
        assert _events(campaign_id) == [("c0@example.com", "soft_bounce", "mail")]
        delivery = _delivery("c0@example.com", campaign_id)
        assert delivery.status == "failed" and "Mailbox full" in delivery.error
    assert _events(fifth) == [("c0@example.com", "bounce", "mail"), ("c0@example.com", "soft_bounce", "mail")]
    # The address went on the suppression list; the person opts in again (their own word lifts it).
    (entry,) = db.session.scalars(sa.select(Suppression).where(Suppression.user_id == user.id)).all()
    assert (entry.address, entry.reason) == ("c0@example.com", "bounced")
    db.session.delete(entry)
    # A delay warning counts as soft but leaves the delivery alone: the message may still arrive.
    db.session.execute(sa.update(Contact).where(Contact.user_id == user.id).values(
        consent={"email": "subscribed"}, consent_sources={}))
    db.session.commit()
    smtp_sink.clear()
    campaign_id = _send_in_process(user)
    (original,) = _sent(smtp_sink).values()
    _mail_to_bounce_server(bounce_server, original.mail_from, dsn(original, action="delayed", status="4.4.7"))
    assert _delivery("c0@example.com", campaign_id).status == "delivered"
    assert _events(campaign_id) == [("c0@example.com", "soft_bounce", "mail")]


def test_a_5_1_x_refusal_at_send_time_is_a_hard_bounce(ctx, smtp_sink):
    from aiosmtpd.controller import Controller

    class Relay:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address == "c0@example.com":
                return "550 5.1.1 <c0@example.com>: Recipient address rejected: User unknown"
            if address == "c1@example.com":
                return "554 5.7.1 Message rejected: sender reputation"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    port = free_port()
    controller = Controller(Relay(), hostname="127.0.0.1", port=port)
    controller.start()
    ctx.config["HERALD_SETTINGS"] = dataclasses.replace(ctx.config["HERALD_SETTINGS"],
                                                        smtp_url=f"smtp://127.0.0.1:{port}")
    try:
        user = verified_merchant()
        add_contacts(user, 3)
        campaign_id = _send_in_process(user)
    finally:
        controller.stop()
    unknown, refused = _delivery("c0@example.com", campaign_id), _delivery("c1@example.com", campaign_id)
    assert unknown.status == refused.status == "failed" and "5.1.1" in unknown.error
    assert _consent(user.id, "c0@example.com") == ("bounced", "provider")
    assert _consent(user.id, "c1@example.com") == ("subscribed", None)  # a policy refusal says nothing of the mailbox
    assert _events(campaign_id) == [("c0@example.com", "bounce", "send")]


# --- Amazon SES through SNS -------------------------------------------------------------------------

def _post_sns(hooks_url: str, message: dict[str, Any]) -> int:
    # SNS posts JSON with a text/plain content type.
    return requests.post(f"{hooks_url}/ses", data=json.dumps(message), timeout=10,
                         headers={"Content-Type": "text/plain; charset=UTF-8",
                                  "x-amz-sns-message-type": message["Type"]}).status_code


def test_signed_ses_notifications_apply_once(ctx, smtp_sink, sns, hooks_url):
    user = verified_merchant()
    add_contacts(user, 3)
    campaign_id = _send_in_process(user)
    sent = _sent(smtp_sink)
    bounce = sns.signer.sign(sns_message(TOPIC, sns.certificate_url, ses_bounce(sent["c0@example.com"])))
    complaint = sns.signer.sign(sns_message(TOPIC, sns.certificate_url, ses_complaint(sent["c1@example.com"])),
                                version="2")
    for _ in range(2):
        assert _post_sns(hooks_url, bounce) == 200
        assert _post_sns(hooks_url, complaint) == 200
    assert _delivery("c0@example.com", campaign_id).status == "failed"
    assert _consent(user.id, "c0@example.com") == ("bounced", "provider")
    assert _consent(user.id, "c1@example.com") == ("complained", "provider")
    assert _events(campaign_id) == [("c0@example.com", "bounce", "ses"), ("c1@example.com", "complaint", "ses")]
    # The certificate was fetched once and kept.
    assert len(sns.requests_to(".pem")) == 1


def test_an_ses_reject_fails_the_delivery_and_says_nothing_of_the_address(ctx, smtp_sink, sns, hooks_url):
    user = verified_merchant()
    add_contacts(user, 1)
    campaign_id = _send_in_process(user)
    reject = sns.signer.sign(sns_message(TOPIC, sns.certificate_url, ses_reject(_sent(smtp_sink)["c0@example.com"])))
    for _ in range(2):
        assert _post_sns(hooks_url, reject) == 200
    delivery = _delivery("c0@example.com", campaign_id)
    assert delivery.status == "failed" and delivery.error == "Rejected by Amazon SES: Bad content."
    assert _consent(user.id, "c0@example.com") == ("subscribed", None)
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 0
    assert _events(campaign_id) == [("c0@example.com", "dropped", "ses")]


def test_forged_ses_notifications_are_refused_and_change_nothing(ctx, smtp_sink, sns, hooks_url):
    user = verified_merchant()
    add_contacts(user, 1)
    campaign_id = _send_in_process(user)
    notification = ses_bounce(_sent(smtp_sink)["c0@example.com"])
    genuine = sns_message(TOPIC, sns.certificate_url, notification)

    signed_by_someone_else = SnsSigner().sign(genuine)
    tampered = {**sns.signer.sign(genuine), "Message": json.dumps(ses_bounce(_sent(smtp_sink)["c0@example.com"]))}
    foreign_certificate = sns.signer.sign(sns_message(TOPIC, "https://sns.attacker.example/cert.pem", notification))
    other_topic = sns.signer.sign(sns_message("arn:aws:sns:us-east-1:999999999999:theirs", sns.certificate_url,
                                              notification))
    unsigned = {key: value for key, value in sns.signer.sign(genuine).items() if key != "Signature"}
    for message in (signed_by_someone_else, tampered, foreign_certificate, other_topic, unsigned):
        assert _post_sns(hooks_url, message) == 403
    assert requests.post(f"{hooks_url}/ses", data=b"not json", timeout=10).status_code == 400

    assert _delivery("c0@example.com", campaign_id).status == "delivered"
    assert _consent(user.id, "c0@example.com") == ("subscribed", None)
    assert _events(campaign_id) == []
    assert sns.requests_to("cert.pem") == []


def test_an_sns_subscription_is_confirmed_once_its_signature_checks(ctx, sns, hooks_url):
    subscribe_url = f"{sns.base_url}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb"
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": "2336412f37fb",
                    "TopicArn": TOPIC, "Message": "You have chosen to subscribe to the topic.",
                    "SubscribeURL": subscribe_url, "Timestamp": "2026-12-07T10:00:00.000Z",
                    "SigningCertURL": sns.certificate_url}
    assert _post_sns(hooks_url, SnsSigner().sign(confirmation)) == 403
    assert [r for r in sns.requests if r.query.get("Action") == "ConfirmSubscription"] == []
    assert _post_sns(hooks_url, sns.signer.sign(confirmation, version="2")) == 200
    (visit,) = [r for r in sns.requests if r.query.get("Action") == "ConfirmSubscription"]
    assert visit.query["Token"] == "2336412f37fb"


# --- SendGrid ---------------------------------------------------------------------------------------

def test_signed_sendgrid_events_apply_once_and_forgeries_change_nothing(ctx, smtp_sink, sendgrid_signer,
                                                                       hooks_url):
    user = verified_merchant()
    add_contacts(user, 3)
    campaign_id = _send_in_process(user)
    sent = _sent(smtp_sink)
    body = json.dumps([
        sendgrid_event(sent["c0@example.com"], "processed"),
        sendgrid_event(sent["c0@example.com"], "bounce", type="bounce", status="5.1.1",
                       reason="550 5.1.1 The email account that you tried to reach does not exist"),
        sendgrid_event(sent["c1@example.com"], "spamreport"),
        sendgrid_event(sent["c2@example.com"], "delivered", response="250 2.0.0 OK"),
    ]).encode() + b"\r\n"
    url = f"{hooks_url}/sendgrid"

    forger = SendGridSigner()
    assert requests.post(url, data=body, headers=forger.headers(body), timeout=10).status_code == 403
    assert requests.post(url, data=body + b" ", headers=sendgrid_signer.headers(body), timeout=10).status_code == 403
    assert requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).status_code == 401
    assert _events(campaign_id) == [] and _consent(user.id, "c0@example.com") == ("subscribed", None)

    for _ in range(2):
        assert requests.post(url, data=body, headers=sendgrid_signer.headers(body), timeout=10).status_code == 204
    delivery = _delivery("c0@example.com", campaign_id)
    assert delivery.status == "failed" and "does not exist" in delivery.error
    assert _consent(user.id, "c0@example.com") == ("bounced", "provider")
    assert _consent(user.id, "c1@example.com") == ("complained", "provider")
    assert _events(campaign_id) == [("c0@example.com", "bounce", "sendgrid"), ("c1@example.com", "complaint", "sendgrid")]


def test_sendgrid_drops_fail_the_delivery_and_blocks_are_soft_bounces(ctx, smtp_sink, sendgrid_signer, hooks_url):
    user = verified_merchant()
    add_contacts(user, 6)
    campaign_id = _send_in_process(user)
    sent = _sent(smtp_sink)
    body = json.dumps([
        # Dropped for SendGrid's own list: the address bounced or reported spam there before.
        sendgrid_event(sent["c0@example.com"], "dropped", reason="Bounced Address"),
        sendgrid_event(sent["c1@example.com"], "dropped", reason="Spam Reporting Address"),
        sendgrid_event(sent["c2@example.com"], "dropped", reason="Unsubscribed Address"),
        # Dropped for the message itself: nothing against the address.
        sendgrid_event(sent["c3@example.com"], "dropped", reason="Invalid SMTPAPI header"),
        sendgrid_event(sent["c4@example.com"], "bounce", type="blocked", status="5.7.1",
                       reason="550 5.7.1 Message rejected due to local policy"),
        sendgrid_event(sent["c5@example.com"], "blocked", status="4.7.0", reason="421 4.7.0 Try again later"),
    ]).encode()
    for _ in range(2):
        answer = requests.post(f"{hooks_url}/sendgrid", data=body, headers=sendgrid_signer.headers(body), timeout=10)
        assert answer.status_code == 204

    errors = {f"c{i}": _delivery(f"c{i}@example.com", campaign_id) for i in range(6)}
    assert {name: row.status for name, row in errors.items()} == dict.fromkeys(errors, "failed")
    assert errors["c0"].error == "Dropped by SendGrid: Bounced Address."
    assert errors["c3"].error == "Dropped by SendGrid: Invalid SMTPAPI header."
    assert [_consent(user.id, f"c{i}@example.com") for i in range(6)] == [
        ("bounced", "provider"), ("complained", "provider"), ("unsubscribed", "contact"),
        ("subscribed", None), ("subscribed", None), ("subscribed", None)]
    listed = db.session.execute(sa.select(Suppression.address, Suppression.reason).order_by(Suppression.address)).all()
    assert [tuple(row) for row in listed] == [("c0@example.com", "bounced"), ("c1@example.com", "complained"),
                                              ("c2@example.com", "unsubscribed")]
    assert _events(campaign_id) == [(f"c{i}@example.com", "dropped", "sendgrid") for i in range(4)] + [
        ("c4@example.com", "soft_bounce", "sendgrid"), ("c5@example.com", "soft_bounce", "sendgrid")]
    # A drop is neither a bounce nor a complaint of this campaign's.
    counts = db.session.execute(sa.text('SELECT "bouncedCount", "softBouncedCount", "complainedCount" FROM bounce_counts'))
    assert [tuple(row) for row in counts] == [(0, 2, 0)]


def test_the_sendgrid_signature_matches_sendgrids_reference_vector():
    # From SendGrid's own library tests (sendgrid-python, test/unit/test_eventwebhook.py).
    public_key = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+"
                  "2fNNRaINXvVpiglSI8eNEc6wEA3F+g==")
    signature = ("MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=")
    payload = json.dumps([{
        "email": "hello@world.com", "event": "dropped", "reason": "Bounced Address",
        "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
        "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>", "timestamp": 1600112492,
    }], sort_keys=True, separators=(",", ":")) + "\r\n"
    assert sendgrid.signature_valid(public_key, payload.encode(), signature, "1600112502")
    assert not sendgrid.signature_valid(public_key, payload.encode(), signature, "1600112503")
    assert not sendgrid.signature_valid(public_key, b"payload", signature, "1600112502")
    assert not sendgrid.signature_valid(public_key, payload.encode(), base64.b64encode(b"x" * 70).decode(),
                                        "1600112502")


def test_a_report_for_a_message_still_being_sent_is_asked_again_later(ctx, smtp_sink, bounce_server):
    user = verified_merchant()
    add_contacts(user, 1)
    campaign_id = _send_in_process(user)
    (original,) = _sent(smtp_sink).values()
    # As if the relay's answer had not been recorded yet.
    db.session.execute(sa.update(Delivery).where(Delivery.campaign_id == campaign_id).values(status="sending"))
    db.session.commit()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _mail_to_bounce_server(bounce_server, original.mail_from, dsn(original))
    assert refused.value.smtp_code == 451
    assert _events(campaign_id) == [] and db.session.scalar(sa.select(sa.func.count(BounceMail.id))) == 0
    with pytest.raises(bounces.NotYet):
        bounces.receive_mail("", [original.mail_from], dsn(original))


def test_an_import_cannot_resubscribe_a_bounced_contact(ctx):
    user = verified_merchant()
    db.session.commit()
    contact = contacts.create_contact(user.id, {"email": "c0@example.com"})
    contacts.record_opt_out(contact.id, ["email"], source="provider", value="bounced")
    db.session.commit()
    result = contact_import.import_contacts(user.id, [{"email": "C0@example.com", "consent": {"email": "subscribed"}}])
    assert (result.updated, result.failed) == (1, 0)
    assert _consent(user.id, "c0@example.com") == ("bounced", "provider")


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BOUNCE_DOMAIN", "not a domain!", "BOUNCE_DOMAIN"),
    ("SENDGRID_WEBHOOK_PUBLIC_KEY", base64.b64encode(b"not a key").decode(), "SENDGRID_WEBHOOK_PUBLIC_KEY"),
    ("SNS_URL_PATTERN", "http://(", "SNS_URL_PATTERN"),
])
def test_bad_bounce_settings_stop_start_up(name, value, says):
    from app.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=says):
        load_settings({**TEST_ENV, name: value})


def test_bounce_settings_in_production_and_their_defaults():
    from app.config import ConfigError, load_settings

    # In production, certificates and subscriptions are only ever fetched over https.
    with pytest.raises(ConfigError, match="https"):
        load_settings({**TEST_ENV, "HERALD_ENV": "production", "ADJUSTABLE_CLOCK": "",
                       "WEBHOOK_ALLOWED_PRIVATE_NETWORKS": "", "SNS_URL_PATTERN": r"http://127\.0\.0\.1:\d+/.*"})
    settings = load_settings({**TEST_ENV, "BOUNCE_DOMAIN": "Bounces.Example.com."})
    assert (settings.bounce_domain, settings.bounce_soft_limit, settings.ses_sns_topic_arns) == ("bounces.example.com", 3, ())
