"""Tracking routes through HTTP: opens and clicks count once, forged links count nothing, a click
goes only where the message pointed, and unsubscribe is a POST that the merchant cannot undo."""
from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import CampaignChannel, Contact, Delivery, MessageLink
from app.security.link_tokens import LinkPurpose, LinkSigner, link_signer
from app.services import tracking
from app.services.consent import merge_consent
from tests.test_email_channel import (
    email_sender,
    make_channel,
    make_delivery,
    outgoing,
    tracked_links,
)

SALE = "https://shop.test/sale?a=1&b=2"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture()
def sent(app_ctx):
    """A channel, one delivery to a subscribed contact, and a link stored for the channel."""
    channel = make_channel()
    delivery, contact = make_delivery(channel)
    link = MessageLink(channel_id=channel.id, url=SALE)
    db.session.add(link)
    db.session.commit()
    return channel, delivery, contact, link


def _counters(channel: CampaignChannel) -> tuple[int, int]:
    db.session.expire_all()
    row = db.session.get(CampaignChannel, channel.id)
    return row.opened_count, row.clicked_count


def _delivery(delivery: Delivery) -> Delivery:
    db.session.expire_all()
    return db.session.get(Delivery, delivery.id)


def _sign(purpose: LinkPurpose, *ids: uuid.UUID) -> str:
    return link_signer().sign(purpose, *ids)


def test_open_pixel_counts_once(client, sent):
    channel, delivery, _, _ = sent
    url = f"/t/o/{_sign(LinkPurpose.OPEN, delivery.id)}"
    first, second = client.get(url), client.get(url)
    for response in (first, second):
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert response.data.startswith(b"GIF89a") and "no-store" in response.headers["Cache-Control"]
    assert _counters(channel) == (1, 0)
    opened = _delivery(delivery).opened_at
    assert opened is not None
    client.get(url)
    assert _delivery(delivery).opened_at == opened


def test_click_redirects_to_the_stored_url_counts_once_and_implies_an_open(client, sent):
    channel, delivery, _, link = sent
    url = f"/t/c/{_sign(LinkPurpose.CLICK, delivery.id, link.id)}"
    for _ in range(2):
        response = client.get(url + "?url=https://evil.test/&next=https://evil.test/")
        assert response.status_code == 302 and response.headers["Location"] == SALE
    assert _counters(channel) == (1, 1)
    row = _delivery(delivery)
    assert row.clicked_at is not None and row.opened_at is not None
    client.get(f"/t/o/{_sign(LinkPurpose.OPEN, delivery.id)}")  # the pixel loading later adds nothing
    assert _counters(channel) == (1, 1)


def test_concurrent_opens_and_clicks_count_once(app, committed_db):
    with app.app_context():
        channel = make_channel()
        delivery, _ = make_delivery(channel)
        link = MessageLink(channel_id=channel.id, url=SALE)
        db.session.add(link)
        db.session.commit()
        tokens = [_sign(LinkPurpose.OPEN, delivery.id), _sign(LinkPurpose.CLICK, delivery.id, link.id)] * 6
        channel_id = channel.id
        db.session.remove()
    start = threading.Barrier(len(tokens))

    def follow(token: str) -> None:
        with app.app_context():
            start.wait()
            (tracking.record_open if len(token) < 60 else tracking.record_click)(token)
            db.session.remove()

    threads = [threading.Thread(target=follow, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        row = db.session.get(CampaignChannel, channel_id)
        assert (row.opened_count, row.clicked_count) == (1, 1)
        db.session.remove()


def test_open_then_click_counts_one_open(client, sent):
    channel, delivery, _, link = sent
    client.get(f"/t/o/{_sign(LinkPurpose.OPEN, delivery.id)}")
    client.get(f"/t/c/{_sign(LinkPurpose.CLICK, delivery.id, link.id)}")
    assert _counters(channel) == (1, 1)


def _bad_tokens(delivery: Delivery, link: MessageLink) -> dict[str, str]:
    good_open = _sign(LinkPurpose.OPEN, delivery.id)
    flipped = good_open[:10] + ("A" if good_open[10] != "A" else "B") + good_open[11:]
    foreign = LinkSigner("another-secret-key-" + "x" * 32)
    return {
        "/t/o/tampered": flipped,
        "/t/o/other key": foreign.sign(LinkPurpose.OPEN, delivery.id),
        "/t/o/click token": _sign(LinkPurpose.CLICK, delivery.id, link.id),
        "/t/o/unsubscribe token": _sign(LinkPurpose.UNSUBSCRIBE, delivery.id),
        "/t/o/garbage": "not-a-token",
        "/t/o/extra char": good_open + "A",
        "/t/o/unknown delivery": _sign(LinkPurpose.OPEN, uuid.uuid4()),
        "/t/c/open token": good_open,
        "/t/c/other key": foreign.sign(LinkPurpose.CLICK, delivery.id, link.id),
        "/t/c/unknown link": _sign(LinkPurpose.CLICK, delivery.id, uuid.uuid4()),
        "/t/u/open token": good_open,
        "/t/u/other key": foreign.sign(LinkPurpose.UNSUBSCRIBE, delivery.id),
    }


def test_forged_tampered_and_misused_tokens_are_404_and_count_nothing(client, sent):
    channel, delivery, contact, link = sent
    for case, token in _bad_tokens(delivery, link).items():
        route = case.split("/")[2]
        for method in ("get", "post") if route == "u" else ("get",):
            response = getattr(client, method)(f"/t/{route}/{token}", data=ONE_CLICK)
            assert response.status_code == 404, (case, method)
            assert "text/html" in response.content_type and "Location" not in response.headers
    assert _counters(channel) == (0, 0)
    row = _delivery(delivery)
    assert row.opened_at is None and row.clicked_at is None
    assert db.session.get(Contact, contact.id).consent["email"] == "subscribed"


def test_click_token_for_another_channels_link_is_404(client, sent):
    channel, delivery, _, _ = sent
    other = make_channel()
    foreign_link = MessageLink(channel_id=other.id, url="https://elsewhere.test/")
    db.session.add(foreign_link)
    db.session.commit()
    response = client.get(f"/t/c/{_sign(LinkPurpose.CLICK, delivery.id, foreign_link.id)}")
    assert response.status_code == 404
    assert _counters(channel) == (0, 0) and _counters(other) == (0, 0)


def test_unsubscribe_page_changes_nothing(client, sent):
    _, delivery, contact, _ = sent
    url = f"/t/u/{_sign(LinkPurpose.UNSUBSCRIBE, delivery.id)}"
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<form method="post">' in page and ">Unsubscribe</button>" in page
    assert response.headers["X-Frame-Options"] == "DENY"
    db.session.expire_all()
    assert db.session.get(Contact, contact.id).consent["email"] == "subscribed"


@pytest.mark.parametrize("body", [ONE_CLICK, None], ids=["one-click", "html-form"])
def test_unsubscribe_post_opts_out_as_the_contact(client, sent, body):
    _, delivery, contact, _ = sent
    url = f"/t/u/{_sign(LinkPurpose.UNSUBSCRIBE, delivery.id)}"
    for _ in range(2):  # idempotent
        response = client.post(url, data=body)
        assert response.status_code == 200 and "unsubscribed" in response.get_data(as_text=True)
    db.session.expire_all()
    row = db.session.get(Contact, contact.id)
    assert row.consent == {"email": "unsubscribed", "sms": "subscribed"}
    assert row.consent_sources == {"email": "contact", "sms": "merchant"}
    # The merchant's data (an import, a PATCH, a sync) cannot resubscribe them.
    consent, sources = merge_consent(row.consent, row.consent_sources, {"email": "subscribed"}, source="merchant")
    assert consent["email"] == "unsubscribed" and sources["email"] == "contact"


def test_unsubscribe_after_the_contact_was_deleted(client, sent):
    _, delivery, contact, _ = sent
    db.session.execute(sa.delete(Contact).where(Contact.id == contact.id))
    db.session.commit()
    response = client.post(f"/t/u/{_sign(LinkPurpose.UNSUBSCRIBE, delivery.id)}", data=ONE_CLICK)
    assert response.status_code == 200


def test_links_in_a_sent_message_work_end_to_end(client, sent, smtp_sink):
    channel, delivery, contact, _ = sent
    with email_sender() as sender:
        assert sender.send(outgoing(delivery, contact, channel)).accepted
    mail = smtp_sink.wait_for(1)[0]
    links = tracked_links(mail.html())
    assert client.get(f"/t/o/{links['o'][0]}").status_code == 200
    targets = {client.get(f"/t/c/{token}").headers["Location"] for token in links["c"]}
    tags = "utm_source=herald&utm_medium=email&utm_campaign=spring-sale"  # the campaign is "Spring sale"
    assert targets == {f"{SALE}&{tags}", f"https://shop.test/new?{tags}"}
    assert _counters(channel) == (1, 1)
    one_click = mail.message["List-Unsubscribe"].strip("<>").replace("https://herald.test", "")
    assert client.post(one_click, data=ONE_CLICK).status_code == 200
    db.session.expire_all()
    assert db.session.get(Contact, contact.id).consent["email"] == "unsubscribed"


def test_head_requests_check_links_without_counting(client, sent):
    """Link checkers and mail scanners issue HEAD requests: they must not count as people."""
    channel, delivery, _, link = sent
    assert client.head(f"/t/o/{_sign(LinkPurpose.OPEN, delivery.id)}").status_code == 200
    response = client.head(f"/t/c/{_sign(LinkPurpose.CLICK, delivery.id, link.id)}")
    assert response.status_code == 302 and response.headers["Location"] == SALE
    assert _counters(channel) == (0, 0)
