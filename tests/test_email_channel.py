"""The email provider against a real SMTP server and real ledger rows: headers, parts, rendering,
tracking links, one connection per batch, and what each kind of SMTP answer becomes."""
from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy import event as sa_event

from app.channels.base import OutgoingMessage, ProviderUnavailable
from app.channels.email import EmailOutcomeUnknown, EmailSender, EmailTransientError
from app.extensions import db
from app.models import Campaign, CampaignChannel, Contact, Delivery, MessageLink, User
from app.security.link_tokens import LinkPurpose, link_signer
from app.services.rendering import contact_context
from tests.conftest import TEST_ENV

BASE = TEST_ENV["PUBLIC_BASE_URL"]
SALE = "https://shop.test/sale?a=1&b=2"
NEW = "https://shop.test/new"
TAGS = "utm_source=herald&utm_medium=email&utm_campaign=spring-sale"  # make_channel's campaign: "Spring sale"
EMAIL_CONFIG = {
    "fromEmail": "news@shop.com",
    "fromName": "Zoë's Shop, Ltd",
    "subject": "Hi {{ contact.firstName }}",
    "html": ('<html><body><p>Hello {{ contact.firstName }}</p>'
             '<a href="https://shop.test/sale?a=1&amp;b=2">Sale</a> <A HREF=\'https://shop.test/new\'>New</A> '
             '<a href="mailto:help@shop.test">Help</a> <a href="#top">Top</a></body></html>'),
    "text": "Hello {{ contact.firstName }}, the sale: https://shop.test/sale",
}
_TRACKED = re.compile(re.escape(BASE) + r"/t/([ocu])/([A-Za-z0-9_-]+)")


# --- Ledger rows, shared with tests/test_tracking.py ---------------------------------------------

def make_channel(config: dict | None = None, user: User | None = None) -> CampaignChannel:
    if user is None:
        user = User(email=f"merchant-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
    campaign = Campaign(user_id=user.id, name="Spring sale", status="running", config={})
    db.session.add(campaign)
    db.session.flush()
    channel = CampaignChannel(campaign_id=campaign.id, channel_type="email", config=config or EMAIL_CONFIG)
    db.session.add(channel)
    db.session.commit()
    return channel


def make_delivery(channel: CampaignChannel, email: str | None = None, **fields) -> tuple[Delivery, Contact]:
    user_id = db.session.scalar(sa.select(Campaign.user_id).where(Campaign.id == channel.campaign_id))
    contact = Contact(user_id=user_id, email=email or f"c-{uuid.uuid4().hex[:8]}@example.com",
                      consent={"email": "subscribed", "sms": "subscribed"},
                      consent_sources={"email": "merchant", "sms": "merchant"}, **fields)
    db.session.add(contact)
    db.session.flush()
    delivery = Delivery(campaign_id=channel.campaign_id, channel_id=channel.id, contact_id=contact.id,
                        channel_type=channel.channel_type, address=contact.email, status="sending")
    db.session.add(delivery)
    db.session.commit()
    return delivery, contact


def outgoing(delivery: Delivery, contact: Contact, channel: CampaignChannel) -> OutgoingMessage:
    return OutgoingMessage(delivery_id=delivery.id, campaign_id=delivery.campaign_id, channel_id=channel.id,
                           contact_id=contact.id, user_id=contact.user_id, address=delivery.address,
                           contact=contact_context(contact), config=channel.config)


def email_sender(smtp_url: str | None = None) -> EmailSender:
    return EmailSender(smtp_url or TEST_ENV["SMTP_URL"], BASE, TEST_ENV["MAIL_FROM"])


def tracked_links(html: str) -> dict[str, list[str]]:
    """Tracking tokens in `html` by purpose (o, c, u)."""
    found: dict[str, list[str]] = {"o": [], "c": [], "u": []}
    for purpose, token in _TRACKED.findall(html):
        found[purpose].append(token)
    return found


# --- Through the real SMTP sink ------------------------------------------------------------------

@pytest.fixture()
def channel(app_ctx) -> CampaignChannel:
    return make_channel()


def test_headers_parts_and_rendering(channel, smtp_sink):
    delivery, contact = make_delivery(channel, "ann@example.com", first_name="<b>Ann & Bo</b>")
    with email_sender() as sender:
        outcome = sender.send(outgoing(delivery, contact, channel))
    (mail,) = smtp_sink.wait_for(1)
    message = mail.message
    assert outcome.accepted and outcome.delivered and outcome.error is None
    assert outcome.provider_message_id == message["Message-ID"] == f"<{delivery.id}@herald.test>"
    assert mail.mail_from == "news@shop.com" and mail.recipients == ("ann@example.com",)
    assert message["From"].addresses[0].display_name == "Zoë's Shop, Ltd"
    assert message["From"].addresses[0].addr_spec == "news@shop.com"
    assert str(message["To"]) == "ann@example.com"
    assert str(message["Subject"]) == "Hi <b>Ann & Bo</b>"
    assert message["X-Herald-Delivery"] == str(delivery.id)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert "Hello <b>Ann & Bo</b>, the sale: https://shop.test/sale" in mail.text()
    assert "<p>Hello &lt;b&gt;Ann &amp; Bo&lt;/b&gt;</p>" in mail.html()


def test_one_click_unsubscribe_headers(channel, smtp_sink):
    delivery, contact = make_delivery(channel)
    with email_sender() as sender:
        sender.send(outgoing(delivery, contact, channel))
    message = smtp_sink.wait_for(1)[0].message
    (unsubscribe,) = re.fullmatch(r"<(https://[^>]+)>", message["List-Unsubscribe"]).groups()
    assert unsubscribe.startswith(f"{BASE}/t/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = unsubscribe.rsplit("/", 1)[1]
    assert link_signer().verify(LinkPurpose.UNSUBSCRIBE, token) == (delivery.id,)
    assert f"Unsubscribe: {unsubscribe}" in smtp_sink.messages[0].text()


def test_pixel_and_rewritten_links(channel, smtp_sink):
    delivery, contact = make_delivery(channel)
    with email_sender() as sender:
        sender.send(outgoing(delivery, contact, channel))
    html = smtp_sink.wait_for(1)[0].html()
    links = tracked_links(html)
    signer = link_signer()
    assert [signer.verify(LinkPurpose.OPEN, token) for token in links["o"]] == [(delivery.id,)]
    assert re.search(r'<img src="[^"]+/t/o/[^"]+" width="1" height="1" alt=""[^>]*></body>', html)
    targets = {}
    for token in links["c"]:
        delivery_id, link_id = signer.verify(LinkPurpose.CLICK, token)
        assert delivery_id == delivery.id
        targets[token] = db.session.get(MessageLink, link_id).url
    assert sorted(targets.values()) == [f"{NEW}?{TAGS}", f"{SALE}&{TAGS}"]
    assert 'href="mailto:help@shop.test"' in html and 'href="#top"' in html
    assert links["u"] and "https://shop.test" not in html


def test_links_are_stored_once_per_channel_across_a_batch(channel, smtp_sink):
    rows = [make_delivery(channel) for _ in range(6)]
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa_event.listen(db.engine, "before_cursor_execute", record)
    try:
        with email_sender() as sender:
            for delivery, contact in rows:
                assert sender.send(outgoing(delivery, contact, channel)).accepted
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", record)
    received = smtp_sink.wait_for(6)
    stored = db.session.scalars(sa.select(MessageLink.url).where(MessageLink.channel_id == channel.id)).all()
    assert sorted(stored) == [f"{NEW}?{TAGS}", f"{SALE}&{TAGS}"]
    assert len([s for s in statements if "message_links" in s]) == 1
    assert len([s for s in statements if "merchant_settings" in s]) == 1  # the UTM tags, read once
    # A later batch (another worker) finds the same rows instead of adding new ones.
    with email_sender() as sender:
        sender.send(outgoing(*rows[0], channel))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MessageLink)
                             .where(MessageLink.channel_id == channel.id)) == 2
    # One SMTP connection carried the whole first batch.
    assert len({mail.peer for mail in received}) == 1


def test_text_only_channel_has_no_html_part(app_ctx, smtp_sink):
    channel = make_channel({"fromEmail": "news@shop.com", "subject": "Plain", "text": "Just text"})
    delivery, contact = make_delivery(channel)
    with email_sender() as sender:
        assert sender.send(outgoing(delivery, contact, channel)).accepted
    message = smtp_sink.wait_for(1)[0].message
    assert message.get_content_type() == "text/plain"
    body = message.get_content().replace("\r\n", "\n")  # as it came over the wire
    assert body.startswith("Just text\n\n--\nUnsubscribe: https://herald.test/t/u/")


def test_unusable_address_is_a_permanent_failure(channel, smtp_sink):
    delivery, contact = make_delivery(channel)
    message = outgoing(delivery, contact, channel)
    with email_sender() as sender:
        outcome = sender.send(OutgoingMessage(**{**message.__dict__, "address": "not an address"}))
    assert not outcome.accepted and "invalid email address" in outcome.error
    assert smtp_sink.messages == []


# --- Against a scripted server: refusals and dropped connections ---------------------------------

class ScriptedHandler:
    """Answers by recipient: `refused@` 550, `busy@` 451, `vanish@` hangs up during DATA; `closing`
    makes the next MAIL FROM answer 421 and close the session."""

    def __init__(self) -> None:
        self.received: list[tuple[object, list[str]]] = []
        self.hang_up_after_next = False
        self.closing = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.closing:
            self.closing -= 1
            asyncio.get_running_loop().call_later(0.01, server.transport.close)
            return "421 4.3.2 Service shutting down, closing transmission channel"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused@"):
            return "550 5.1.1 No such user"
        if address.startswith("busy@"):
            return "451 4.3.0 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if envelope.rcpt_tos[0].startswith("vanish@"):
            server.transport.close()
            return "250 never heard"
        self.received.append((session.peer, list(envelope.rcpt_tos)))
        if self.hang_up_after_next:  # an idle session the server closes between two messages
            self.hang_up_after_next = False
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def scripted_smtp():
    handler = ScriptedHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, f"smtp://127.0.0.1:{port}"
    controller.stop()


def _send_to(channel: CampaignChannel, smtp_url: str, *addresses: str):
    with email_sender(smtp_url) as sender:
        for address in addresses:
            delivery, contact = make_delivery(channel, address)
            yield sender.send(outgoing(delivery, contact, channel))


def test_recipient_refused_is_not_accepted_and_the_session_goes_on(channel, scripted_smtp):
    handler, url = scripted_smtp
    refused, accepted = list(_send_to(channel, url, "refused@example.com", "ok@example.com"))
    assert not refused.accepted and not refused.delivered
    assert "550" in refused.error and "No such user" in refused.error
    assert accepted.accepted and accepted.delivered
    assert [rcpts for _, rcpts in handler.received] == [["ok@example.com"]]


def test_temporary_refusal_defers_that_recipient_only(channel, scripted_smtp):
    handler, url = scripted_smtp
    busy, ok = list(_send_to(channel, url, "busy@example.com", "ok@example.com"))
    # Not handed back as a whole-relay problem: this recipient waits, the session carries the next.
    assert not busy.accepted and busy.deferred and "451" in busy.error and "Mailbox busy" in busy.error
    assert ok.accepted
    assert [rcpts for _, rcpts in handler.received] == [["ok@example.com"]]


def test_a_421_reconnects_and_sends_the_message_on_the_fresh_session(channel, scripted_smtp):
    handler, url = scripted_smtp
    handler.closing = 1
    (outcome,) = list(_send_to(channel, url, "one@example.com"))
    assert outcome.accepted
    assert [rcpts for _, rcpts in handler.received] == [["one@example.com"]]


def test_a_server_that_keeps_closing_is_unavailable(channel, scripted_smtp):
    handler, url = scripted_smtp
    handler.closing = 2
    with pytest.raises(EmailTransientError, match="421"):
        list(_send_to(channel, url, "one@example.com"))
    assert handler.received == []


def test_dropped_idle_connection_is_reopened_once(channel, scripted_smtp):
    handler, url = scripted_smtp
    handler.hang_up_after_next = True
    with email_sender(url) as sender:
        for address in ("one@example.com", "two@example.com"):
            delivery, contact = make_delivery(channel, address)
            assert sender.send(outgoing(delivery, contact, channel)).accepted
            time.sleep(0.2)
    assert [rcpts for _, rcpts in handler.received] == [["one@example.com"], ["two@example.com"]]
    assert len({peer for peer, _ in handler.received}) == 2


def test_hang_up_during_data_is_an_unknown_outcome(channel, scripted_smtp):
    _, url = scripted_smtp
    with pytest.raises(EmailOutcomeUnknown) as raised:
        list(_send_to(channel, url, "vanish@example.com"))
    assert not isinstance(raised.value, ProviderUnavailable)  # never handed back for a second send


def test_unreachable_server_is_transient(app_ctx):
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        email_sender(f"smtp://127.0.0.1:{_free_port()}").__enter__()
