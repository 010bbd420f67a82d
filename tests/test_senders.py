"""Verified senders end to end: an address confirmed by the link mailed to it (through a real worker
and SMTP server), a domain verified by the records a real DNS server on 127.0.0.1 serves, mail from
that domain DKIM-signed and verified against the same DNS, and launches refused (422) while a
campaign's sender is not verified or is a placeholder."""
from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import dkim
import pytest
import sqlalchemy as sa
from flask import Flask

from app.errors import ValidationFailed
from app.extensions import db
from app.models import Campaign, Sender, User, utcnow
from app.services import senders, sending
from tests.conftest import TEST_ENV
from tests.support.accounts import bearer, signed_in
from tests.support.campaigns import SENDER, add_contacts, email_campaign, launch, verified_merchant
from tests.support.dns_server import LocalDns

SENDERS = "/api/v1/senders"
CAMPAIGNS = "/api/v1/campaigns"
LINK = re.compile(r"https://herald\.test(/confirm-sender\?token=([A-Za-z0-9_\-]+))")
SPF_INCLUDE = "spf.relay.herald.test"
EMAIL = {"fromEmail": SENDER, "fromName": "Shop", "subject": "Hi {{ contact.firstName }}", "text": "Our sale"}
EVERYONE = {"name": "Everyone", "definition": {"match": "all", "conditions": []}}


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LocalDns]:
    server = LocalDns().start()
    yield server
    server.stop()


@pytest.fixture()
def local_dns(app: Flask, dns_server: LocalDns) -> Iterator[LocalDns]:
    """The session app resolving through the local DNS server, asking for an SPF include (settings
    are frozen: swapped)."""
    original = app.config["HERALD_SETTINGS"]
    app.config["HERALD_SETTINGS"] = dataclasses.replace(
        original, dns_resolver=("127.0.0.1", dns_server.port), sender_spf_include=SPF_INCLUDE)
    dns_server.clear()
    try:
        yield dns_server
    finally:
        app.config["HERALD_SETTINGS"] = original
        dns_server.clear()


def _verified_account(client) -> tuple[uuid.UUID, dict[str, str]]:
    tokens, headers = signed_in(client)
    user_id = uuid.UUID(tokens["user"]["id"])
    db.session.execute(sa.update(User).where(User.id == user_id).values(is_verified=True))
    db.session.commit()
    return user_id, headers


def _sender_row(sender_id: str) -> Sender:
    db.session.expire_all()
    return db.session.get_one(Sender, uuid.UUID(sender_id))


def _publish(dns: LocalDns, records: list[dict], *purposes: str) -> None:
    for record in records:
        if record["purpose"] in purposes:
            dns.publish_txt(record["name"], record["value"])


def _campaign(client, headers, config=None) -> str:
    campaign_id = client.post(CAMPAIGNS, headers=headers, json={"name": "Winter sale"}).get_json()["id"]
    channel = client.post(f"{CAMPAIGNS}/{campaign_id}/channels", headers=headers,
                          json={"channelType": "email", "config": config or EMAIL})
    assert channel.status_code == 201, channel.get_json()
    assert client.post(f"{CAMPAIGNS}/{campaign_id}/audiences", headers=headers, json=EVERYONE).status_code == 201
    return campaign_id


# --- Addresses --------------------------------------------------------------------------------------

def test_an_address_is_verified_by_the_link_mailed_to_it(app, live_client, celery_worker, smtp_sink):
    client = live_client
    with app.app_context():
        _, headers = _verified_account(client)
    created = client.post(SENDERS, headers=headers, json={"email": "News@Shop.COM"})
    assert created.status_code == 201, created.get_json()
    sender = created.get_json()
    assert (sender["kind"], sender["email"], sender["domain"], sender["status"]) == (
        "address", "news@shop.com", None, "pending")
    assert sender["dnsRecords"] == [] and sender["verifiedAt"] is None

    (mail,) = [m for m in smtp_sink.wait_for(2, timeout=30) if m.recipients == ("news@shop.com",)]
    assert mail.message["Subject"] == "Confirm this address as a sender on Herald"
    path, token = LINK.search(mail.text()).groups()
    with app.app_context():
        row = _sender_row(sender["id"])
        # Only the token's hash is kept, with its expiry.
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert timedelta(hours=47) < row.token_expires_at - utcnow() <= timedelta(hours=48)
    assert client.get(f"{SENDERS}/{sender['id']}", headers=headers).get_json()["confirmationSentAt"] is not None

    # Opening the link (a mail scanner does) confirms nothing; the page's button does.
    page = client.get(path)
    assert page.status_code == 200 and 'name="token"' in page.get_data(as_text=True)
    assert client.get(f"{SENDERS}/{sender['id']}", headers=headers).get_json()["status"] == "pending"
    confirmed = client.post("/confirm-sender", data={"token": token})
    assert confirmed.status_code == 200 and "news@shop.com is a verified sender" in confirmed.get_data(as_text=True)
    shown = client.get(f"{SENDERS}/{sender['id']}", headers=headers).get_json()
    assert shown["status"] == "verified" and shown["verifiedAt"] is not None
    assert client.post("/confirm-sender", data={"token": token}).status_code == 200  # once more: still confirmed


def test_unknown_replaced_and_expired_links(app, client, app_ctx, smtp_sink):
    user_id, headers = _verified_account(client)
    sender = client.post(SENDERS, headers=headers, json={"email": "news@shop.com"}).get_json()
    assert senders.send_confirmation(uuid.UUID(sender["id"])) is True
    assert senders.send_confirmation(uuid.UUID(sender["id"])) is False  # sent once, however often the task runs
    (first,) = smtp_sink.messages
    token = LINK.search(first.text()).group(2)

    unknown = client.post("/confirm-sender", data={"token": "not-a-token"})
    assert unknown.status_code == 404 and "not valid" in unknown.get_data(as_text=True)
    assert client.get("/confirm-sender").status_code == 404

    # A new link within the minute: 429; later, the old link stops working and the new one works.
    too_soon = client.post(f"{SENDERS}/{sender['id']}/resend", headers=headers)
    assert too_soon.status_code == 429 and int(too_soon.headers["Retry-After"]) >= 1
    db.session.execute(sa.update(Sender).values(confirmation_requested_at=utcnow() - timedelta(minutes=2)))
    db.session.commit()
    assert client.post(f"{SENDERS}/{sender['id']}/resend", headers=headers).status_code == 202
    assert senders.send_confirmation(uuid.UUID(sender["id"])) is True
    new_token = LINK.search(smtp_sink.messages[-1].text()).group(2)
    assert client.post("/confirm-sender", data={"token": token}).status_code == 404

    # Past 48 hours the link is gone (410), and the sender stays pending.
    db.session.execute(sa.update(Sender).values(token_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    expired = client.post("/confirm-sender", data={"token": new_token})
    assert expired.status_code == 410 and f"/api/v1/senders/{sender['id']}/resend" in expired.get_data(as_text=True)
    assert _sender_row(sender["id"]).status == "pending"

    # Only a pending address is sent links.
    db.session.execute(sa.update(Sender).values(status="verified"))
    db.session.commit()
    assert client.post(f"{SENDERS}/{sender['id']}/resend", headers=headers).status_code == 409


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "not-an-email"}, "email"),
    ({"email": "hello@example.com"}, "email"),  # the assistant's placeholder
    ({"email": "news@shop.test"}, "email"),
    ({"email": "news@mail.example.org"}, "email"),
    ({"domain": "example.net"}, "domain"),
    ({"domain": "shop.invalid"}, "domain"),
    ({"domain": "shop.example"}, "domain"),
    ({"domain": "not a domain"}, "domain"),
    ({"domain": "localhost"}, "domain"),
    ({"email": "news@shop.com", "domain": "shop.com"}, "email"),
    ({}, "domain"),
    ({"email": None}, "email"),
])
def test_bad_senders_are_refused_with_the_field(client, app_ctx, body, field):
    _, headers = _verified_account(client)
    response = client.post(SENDERS, headers=headers, json=body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert db.session.scalar(sa.select(sa.func.count(Sender.id))) == 0


def test_senders_are_listed_shown_and_deleted_only_by_their_merchant(client, app_ctx):
    _, headers = _verified_account(client)
    _, stranger = _verified_account(client)
    first = client.post(SENDERS, headers=headers, json={"email": "news@shop.com"}).get_json()
    second = client.post(SENDERS, headers=headers, json={"domain": "Mail.Shop.COM."}).get_json()
    assert second["domain"] == "mail.shop.com" and second["email"] is None
    assert client.post(SENDERS, headers=headers, json={"email": "NEWS@shop.com"}).status_code == 409
    assert client.post(SENDERS, headers=headers, json={"domain": "mail.shop.com"}).status_code == 409

    listed = client.get(SENDERS, headers=headers)
    assert {s["id"] for s in listed.get_json()} == {second["id"], first["id"]}  # one transaction: one createdAt
    assert listed.headers["X-Pagination"]
    assert client.get(SENDERS, headers=stranger).get_json() == []
    for method, suffix in (("get", ""), ("delete", ""), ("post", "/check"), ("post", "/resend")):
        assert getattr(client, method)(f"{SENDERS}/{first['id']}{suffix}", headers=stranger).status_code == 404
    assert client.delete(f"{SENDERS}/{first['id']}", headers=headers).status_code == 204
    assert client.get(f"{SENDERS}/{first['id']}", headers=headers).status_code == 404
    assert client.post(f"{SENDERS}/{first['id']}/check", headers=headers).status_code == 404
    assert client.post(f"{SENDERS}/{second['id']}/resend", headers=headers).status_code == 409  # a domain


def test_adding_senders_is_limited_per_merchant(client, app_ctx):
    _, headers = _verified_account(client)
    _, other = _verified_account(client)
    assert client.post(SENDERS, headers=headers, json={"email": "hello@example.com"}).status_code == 422  # free
    for i in range(10):
        assert client.post(SENDERS, headers=headers, json={"email": f"news{i}@shop.com"}).status_code == 201
    refused = client.post(SENDERS, headers=headers, json={"email": "news10@shop.com"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert client.post(SENDERS, headers=other, json={"email": "news@shop.com"}).status_code == 201


def test_api_keys_need_the_settings_scope_to_add_senders(client, app_ctx):
    _, headers = _verified_account(client)
    keys = {scopes[0]: client.post("/api/v1/api-keys", headers=headers, json={"name": n, "scopes": scopes})
            .get_json()["key"] for n, scopes in (("r", ["read"]), ("s", ["settings:write"]))}
    assert client.post(SENDERS, headers=bearer(keys["read"]), json={"email": "news@shop.com"}).status_code == 403
    assert client.post(SENDERS, headers=bearer(keys["settings:write"]), json={"email": "news@shop.com"}).status_code == 201
    assert len(client.get(SENDERS, headers=bearer(keys["read"])).get_json()) == 1
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"/api/v1/senders", "/api/v1/senders/{sender_id}", "/api/v1/senders/{sender_id}/check"} <= set(paths)


# --- Domains --------------------------------------------------------------------------------------

def test_a_domain_is_verified_when_its_records_are_published(client, app_ctx, local_dns):
    _, headers = _verified_account(client)
    created = client.post(SENDERS, headers=headers, json={"domain": "shop.com"})
    assert created.status_code == 201, created.get_json()
    sender = created.get_json()
    records = {r["purpose"]: r for r in sender["dnsRecords"]}
    selector = _sender_row(sender["id"]).dkim_selector
    assert re.fullmatch(r"herald-[a-z0-9]{8}", selector)
    assert {p: (r["type"], r["name"], r["status"]) for p, r in records.items()} == {
        "spf": ("TXT", "shop.com", "unchecked"), "dkim": ("TXT", f"{selector}._domainkey.shop.com", "unchecked"),
        "dmarc": ("TXT", "_dmarc.shop.com", "unchecked")}
    assert records["spf"]["value"] == f"v=spf1 include:{SPF_INCLUDE} ~all"
    assert records["dmarc"]["value"] == "v=DMARC1; p=none"
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{390,400}", records["dkim"]["value"])  # RSA-2048
    row = _sender_row(sender["id"])
    assert row.dkim_private_key.startswith("enc:v1:") and "PRIVATE KEY" not in row.dkim_private_key

    def check() -> dict:
        response = client.post(f"{SENDERS}/{sender['id']}/check", headers=headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    nothing = check()
    assert nothing["status"] == "pending" and nothing["checkedAt"] is not None
    assert {r["purpose"]: r["status"] for r in nothing["dnsRecords"]} == dict.fromkeys(records, "missing")
    assert "No TXT record at " + records["dkim"]["name"] in [r["problem"] for r in nothing["dnsRecords"]][1]

    # What a merchant typically has: an SPF record of their own, another key at the selector, two DMARC records.
    local_dns.publish_txt("shop.com", "v=spf1 mx include:_spf.mailhost.test -all")
    local_dns.publish_txt("shop.com", "google-site-verification=abc")
    local_dns.publish_txt(records["dkim"]["name"], "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC")
    local_dns.publish_txt("_dmarc.shop.com", "v=DMARC1; p=none")
    local_dns.publish_txt("_dmarc.shop.com", "v=DMARC1; p=reject")
    wrong = {r["purpose"]: r for r in check()["dnsRecords"]}
    assert {p: r["status"] for p, r in wrong.items()} == dict.fromkeys(records, "wrong")
    assert wrong["spf"]["found"] == ["v=spf1 mx include:_spf.mailhost.test -all"]
    assert wrong["spf"]["suggested"] == f"v=spf1 mx include:_spf.mailhost.test include:{SPF_INCLUDE} -all"
    assert "does not include" in wrong["spf"]["problem"] and "p= differs" in wrong["dkim"]["problem"]
    assert "2 DMARC records" in wrong["dmarc"]["problem"]
    assert _sender_row(sender["id"]).status == "pending"

    # Fixed: SPF as suggested, Herald's key (split in 255-character strings by the DNS host), one DMARC.
    local_dns.clear()
    local_dns.publish_txt("shop.com", wrong["spf"]["suggested"])
    _publish(local_dns, sender["dnsRecords"], "dkim", "dmarc")
    verified = check()
    assert verified["status"] == "verified" and verified["verifiedAt"] is not None
    assert {r["purpose"]: (r["status"], r["problem"]) for r in verified["dnsRecords"]} == dict.fromkeys(
        records, ("ok", None))

    # A check is authoritative: a record taken down makes the domain pending again, and says which.
    local_dns.remove(records["dkim"]["name"])
    again = check()
    assert again["status"] == "pending" and again["verifiedAt"] is None
    assert [(r["purpose"], r["status"]) for r in again["dnsRecords"]] == [
        ("spf", "ok"), ("dkim", "missing"), ("dmarc", "ok")]


def test_without_an_spf_include_a_domain_needs_dkim_and_dmarc_only(client, app_ctx, local_dns, app):
    app.config["HERALD_SETTINGS"] = dataclasses.replace(app.config["HERALD_SETTINGS"], sender_spf_include="")
    _, headers = _verified_account(client)
    sender = client.post(SENDERS, headers=headers, json={"domain": "shop.com"}).get_json()
    assert [r["purpose"] for r in sender["dnsRecords"]] == ["dkim", "dmarc"]
    _publish(local_dns, sender["dnsRecords"], "dkim", "dmarc")
    assert client.post(f"{SENDERS}/{sender['id']}/check", headers=headers).get_json()["status"] == "verified"


def test_a_resolver_that_does_not_answer_is_a_503_and_changes_nothing(client, app_ctx, local_dns):
    _, headers = _verified_account(client)
    sender = client.post(SENDERS, headers=headers, json={"domain": "shop.com"}).get_json()
    local_dns.failing = True
    response = client.post(f"{SENDERS}/{sender['id']}/check", headers=headers)
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert "did not answer" in response.get_json()["message"]
    row = _sender_row(sender["id"])
    assert (row.status, row.checked_at, row.check_results) == ("pending", None, None)
    address = client.post(SENDERS, headers=headers, json={"email": "news@shop.com"}).get_json()
    assert client.post(f"{SENDERS}/{address['id']}/check", headers=headers).status_code == 409


def test_bad_dns_settings_stop_start_up():
    from app.config import ConfigError, load_settings

    for name, value in (("DNS_RESOLVER", "resolver.local:53"), ("DNS_RESOLVER", "127.0.0.1:99999"),
                        ("SENDER_SPF_INCLUDE", "not a domain"), ("DKIM_SELECTOR_PREFIX", "bad_selector")):
        with pytest.raises(ConfigError, match=name):
            load_settings({**TEST_ENV, name: value})
    settings = load_settings({**TEST_ENV, "DNS_RESOLVER": "[::1]:5353", "SENDER_SPF_INCLUDE": "include:AmazonSES.com"})
    assert (settings.dns_resolver, settings.sender_spf_include, settings.dkim_selector_prefix) == (
        ("::1", 5353), "amazonses.com", "herald")
    assert load_settings({**TEST_ENV, "DNS_RESOLVER": "10.0.0.2"}).dns_resolver == ("10.0.0.2", 53)
    assert load_settings(TEST_ENV).dns_resolver is None


def test_mail_from_a_verified_domain_is_dkim_signed_with_its_key(app, committed_db, smtp_sink, local_dns):
    with app.app_context():
        client = app.test_client()
        user_id, headers = _verified_account(client)
        domain = client.post(SENDERS, headers=headers, json={"domain": "shop.com"}).get_json()
        _publish(local_dns, domain["dnsRecords"], "spf", "dkim", "dmarc")
        assert client.post(f"{SENDERS}/{domain['id']}/check", headers=headers).get_json()["status"] == "verified"
        user = db.session.get_one(User, user_id)
        add_contacts(user, 2)
        db.session.commit()
        # Any address at the domain may send; the one-click unsubscribe header is signed too.
        campaign, channel = email_campaign(user, {"fromEmail": "promo@shop.com"})
        launch(user.id, campaign.id)
        sending.send_channel(channel.id)
        db.session.remove()

    received = smtp_sink.wait_for(2)
    for mail in received:
        assert mail.raw.startswith(b"DKIM-Signature: ")
        signature = str(mail.message["DKIM-Signature"])
        assert "d=shop.com" in signature and f"s={_selector(domain)}" in signature
        assert "list-unsubscribe-post" in signature.replace(" ", "").lower()
        assert dkim.verify(mail.raw, dnsfunc=local_dns.txt)
    tampered = received[0].raw.replace(b"Subject: Hello", b"Subject: Howdy")
    assert tampered != received[0].raw and not dkim.verify(tampered, dnsfunc=local_dns.txt)


def test_mail_from_an_address_or_an_unverified_domain_is_not_signed(app, committed_db, smtp_sink, local_dns):
    with app.app_context():
        user = verified_merchant()  # news@shop.com verified as an address
        pending = senders.add_domain(user.id, "shop.com")  # its records never published
        add_contacts(user, 1)
        db.session.commit()
        campaign, channel = email_campaign(user)
        launch(user.id, campaign.id)
        sending.send_channel(channel.id)
        assert pending.status == "pending"
        db.session.remove()
    (mail,) = smtp_sink.wait_for(1)
    assert mail.message["DKIM-Signature"] is None and mail.message["From"].addresses[0].addr_spec == SENDER


def _selector(sender: dict) -> str:
    dkim_record = next(r for r in sender["dnsRecords"] if r["purpose"] == "dkim")
    return dkim_record["name"].split("._domainkey.")[0]


# --- Launching ------------------------------------------------------------------------------------

def test_launch_and_schedule_refuse_placeholder_and_unverified_senders(client, app_ctx):
    user_id, headers = _verified_account(client)
    future = (utcnow() + timedelta(days=1)).isoformat() + "Z"

    placeholder = _campaign(client, headers, {**EMAIL, "fromEmail": "hello@example.com"})
    for action, body in (("launch", None), ("schedule", {"scheduledAt": future})):
        response = client.post(f"{CAMPAIGNS}/{placeholder}/{action}", headers=headers, json=body)
        assert response.status_code == 422, response.get_json()
        answer = response.get_json()
        assert "hello@example.com (channels.email.config.fromEmail)" in answer["message"]
        (problem,) = answer["errors"]["channels"]["email"]["config"]["fromEmail"]
        assert "hello@example.com is a placeholder" in problem
    assert client.get(f"{CAMPAIGNS}/{placeholder}", headers=headers).get_json()["status"] == "draft"

    unverified = _campaign(client, headers)
    response = client.post(f"{CAMPAIGNS}/{unverified}/launch", headers=headers)
    assert response.status_code == 422
    (problem,) = response.get_json()["errors"]["channels"]["email"]["config"]["fromEmail"]
    assert problem.startswith("news@shop.com is not a verified sender: verify the address or its domain shop.com")

    pending = client.post(SENDERS, headers=headers, json={"email": SENDER}).get_json()
    response = client.post(f"{CAMPAIGNS}/{unverified}/launch", headers=headers)
    assert "(waiting for confirmation)" in response.get_json()["errors"]["channels"]["email"]["config"]["fromEmail"][0]

    # Verified: the address itself, or (for any address at it) its domain.
    db.session.execute(sa.update(Sender).where(Sender.id == uuid.UUID(pending["id"])).values(status="verified"))
    db.session.commit()
    ab = _campaign(client, headers, {**EMAIL, "abTest": {
        "variants": [{"subject": "A"}, {"subject": "B", "fromEmail": "deals@shop.com"}],
        "testPercent": 20, "metric": "unique_clicks", "durationMinutes": 60}})
    response = client.post(f"{CAMPAIGNS}/{ab}/launch", headers=headers)
    assert response.status_code == 422
    assert list(response.get_json()["errors"]["channels"]["email"]["config"]) == ["abTest"]
    assert "deals@shop.com" in response.get_json()["errors"]["channels"]["email"]["config"]["abTest"]["variants"]["1"][
        "fromEmail"][0]
    db.session.add(Sender(user_id=user_id, kind="domain", domain="shop.com", status="verified", verified_at=utcnow()))
    db.session.commit()
    assert client.post(f"{CAMPAIGNS}/{ab}/launch", headers=headers).status_code == 200
    assert client.post(f"{CAMPAIGNS}/{unverified}/schedule", headers=headers,
                       json={"scheduledAt": future}).status_code == 200


def test_a_scheduled_campaign_keeps_a_verified_sender(client, app_ctx):
    user_id, headers = _verified_account(client)
    address = client.post(SENDERS, headers=headers, json={"email": SENDER}).get_json()
    db.session.execute(sa.update(Sender).values(status="verified"))
    db.session.commit()
    campaign_id = _campaign(client, headers)
    future = (utcnow() + timedelta(days=1)).isoformat() + "Z"
    assert client.post(f"{CAMPAIGNS}/{campaign_id}/schedule", headers=headers,
                       json={"scheduledAt": future}).status_code == 200
    channel_id = client.get(f"{CAMPAIGNS}/{campaign_id}", headers=headers).get_json()["channels"][0]["id"]

    changed = client.patch(f"{CAMPAIGNS}/{campaign_id}/channels/{channel_id}", headers=headers,
                           json={"config": {"fromEmail": "other@shop.com"}})
    assert changed.status_code == 422 and "(config.fromEmail)" in changed.get_json()["message"]
    assert "other@shop.com is not a verified sender" in changed.get_json()["errors"]["config"]["fromEmail"][0]
    channel = client.get(f"{CAMPAIGNS}/{campaign_id}/channels/{channel_id}", headers=headers).get_json()
    assert channel["config"]["fromEmail"] == SENDER

    deleted = client.delete(f"{SENDERS}/{address['id']}", headers=headers)
    assert deleted.status_code == 409 and "Winter sale" in deleted.get_json()["message"]
    assert client.get(f"{SENDERS}/{address['id']}", headers=headers).status_code == 200
    assert client.post(f"{CAMPAIGNS}/{campaign_id}/unschedule", headers=headers).status_code == 200
    assert client.delete(f"{SENDERS}/{address['id']}", headers=headers).status_code == 204
    assert db.session.scalar(sa.select(Campaign.status).where(Campaign.id == uuid.UUID(campaign_id))) == "draft"


def test_the_rule_is_one_function_flows_can_call(app_ctx):
    user = verified_merchant()
    channels = [senders.SendingChannel(("steps", 2), "email", {"fromEmail": "Hello@Example.COM"}),
                senders.SendingChannel(("steps", 3), "email", {"fromEmail": "NEWS@shop.com"}),
                senders.SendingChannel(("steps", 4), "sms", {"body": "Hi"})]
    with pytest.raises(ValidationFailed) as refused:
        senders.require_verified(user.id, channels)
    assert list(refused.value.errors) == ["steps"] and list(refused.value.errors["steps"]) == ["2"]
    senders.require_verified(user.id, channels[1:])
