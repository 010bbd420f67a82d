"""The webhook outbox: every change a merchant can subscribe to writes its event in the transaction
that makes the change (a send settled by the send engine's own statement, a receipt, an open, a
click, an unsubscribe, a bounce, a campaign's completion), once, for that merchant's subscribed
endpoints only; a merchant without endpoints gets nothing written."""
from __future__ import annotations

import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from app.channels.base import Receipt
from app.extensions import db
from app.models import Delivery, WebhookDelivery, WebhookEvent
from app.security.link_tokens import LinkPurpose, link_signer
from app.services import bounces, receipts, sending, webhook_delivery, webhook_events, webhooks
from app.services.transactions import transaction
from app.webhooks.catalogue import EVENT_TYPES, UnknownEventType
from tests.support.campaigns import add_contacts, campaign_on, email_campaign, launch, verified_merchant
from tests.test_email_channel import tracked_links

RECEIVER = "https://hooks.merchant.example/herald"


def _endpoint(user_id: uuid.UUID, types: list[str] | None = None) -> uuid.UUID:
    return webhooks.create_endpoint(user_id, RECEIVER, types or list(EVENT_TYPES)).id


def _events(user_id: uuid.UUID) -> list[WebhookEvent]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.user_id == user_id)
                                   .order_by(WebhookEvent.created_at)))


def _types(user_id: uuid.UUID) -> Counter:
    return Counter(event.type for event in _events(user_id))


def test_a_campaign_sent_writes_its_message_events_only_for_subscribed_merchants(ctx, smtp_sink):
    everything, nothing, completions = verified_merchant(), verified_merchant(), verified_merchant()
    endpoint = _endpoint(everything.id)
    _endpoint(completions.id, ["campaign.completed"])
    people = {}
    for user in (everything, nothing, completions):
        people[user.id] = {c.id for c in add_contacts(user, 3, prefix=f"u{user.id.hex[:6]}-")}
        campaign, channel = email_campaign(user)
        launch(user.id, campaign.id)
        assert sending.send_channel(channel.id) == 3

    # SMTP acceptance is delivery: each message is sent and delivered, in the settle's own statement.
    assert _types(everything.id) == {"message.sent": 3, "message.delivered": 3, "campaign.completed": 1}
    assert _types(nothing.id) == {}
    assert _types(completions.id) == {"campaign.completed": 1}
    sent = [e for e in _events(everything.id) if e.type == "message.sent"]
    assert {e.data["contactId"] for e in sent} == {str(c) for c in people[everything.id]}
    assert {e.data["channel"] for e in sent} == {"email"} and all(e.data["address"] for e in sent)
    completed = next(e for e in _events(everything.id) if e.type == "campaign.completed")
    assert completed.data["channels"][0]["sentCount"] == 3 and completed.data["endedAt"].endswith("+00:00")
    # One pending delivery per event, to the merchant's endpoint.
    deliveries = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint)).all()
    assert len(deliveries) == 7 and {d.status for d in deliveries} == {"pending"}


def test_opens_clicks_and_unsubscribes_from_links_write_their_events_once(ctx, smtp_sink):
    user = verified_merchant()
    _endpoint(user.id)
    add_contacts(user, 1)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    sending.send_channel(channel.id)
    delivery = db.session.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign.id)).one()
    link = tracked_links(smtp_sink.messages[0].html())["c"][0]
    client = ctx.test_client()
    signer = link_signer()
    for _ in range(2):  # the second of each counts nothing, and writes nothing
        assert client.get(f"/t/c/{link}").status_code == 302
        assert client.get(f"/t/o/{signer.sign(LinkPurpose.OPEN, delivery.id)}").status_code == 200
        assert client.post(f"/t/u/{signer.sign(LinkPurpose.UNSUBSCRIBE, delivery.id)}",
                           data={"List-Unsubscribe": "One-Click"}).status_code == 200
    events = {e.type: e for e in _events(user.id)}
    assert _types(user.id) == {"message.sent": 1, "message.delivered": 1, "campaign.completed": 1,
                               "message.clicked": 1, "message.opened": 1, "contact.unsubscribed": 1}
    # The URL the click went to (the stored one, UTM tags included).
    assert events["message.clicked"].data["url"].startswith("https://shop.test/sale?utm_source=herald")
    assert events["message.opened"].data["deliveryId"] == str(delivery.id)
    assert events["contact.unsubscribed"].data == {"contactId": str(delivery.contact_id), "channels": ["email"],
                                                   "source": "contact"}


def test_receipts_and_bounces_write_their_events_once(ctx):
    user = verified_merchant()
    _endpoint(user.id)
    contacts = add_contacts(user, 3)
    campaign, channel = campaign_on(user, "sms", {"body": "Hi"})
    rows = [Delivery(campaign_id=campaign.id, channel_id=channel.id, contact_id=c.id, channel_type="sms",
                     address=f"+1415555000{i}", status="sent", provider_message_id=f"SM{i}")
            for i, c in enumerate(contacts)]
    db.session.add_all(rows)
    db.session.commit()
    for _ in range(2):  # a provider repeating its callback changes nothing the second time
        receipts.apply("sms", [Receipt("SM0", "delivered"), Receipt("SM1", "failed", error="30003")])
    assert _types(user.id) == {"message.delivered": 1, "message.failed": 1}
    failed = next(e for e in _events(user.id) if e.type == "message.failed")
    assert failed.data["error"] == "30003" and failed.data["providerMessageId"] == "SM1"

    mail_campaign, mail_channel = email_campaign(user)
    bounced = Delivery(campaign_id=mail_campaign.id, channel_id=mail_channel.id, contact_id=contacts[2].id,
                       channel_type="email", address=contacts[2].email, status="delivered",
                       error="RCPT TO answered 550 5.1.1 no such user")
    db.session.add(bounced)
    db.session.commit()
    for _ in range(2):
        with transaction():
            bounces.record_gone("email", [(bounced.id, contacts[2].email)])
    assert _types(user.id) == {"message.delivered": 1, "message.failed": 2, "contact.bounced": 1}
    event = next(e for e in _events(user.id) if e.type == "contact.bounced")
    assert event.data == {"contactId": str(contacts[2].id), "channel": "email", "address": contacts[2].email,
                          "deliveryId": str(bounced.id)}


def test_emit_writes_in_the_callers_transaction_only_what_is_subscribed(ctx):
    user, other = verified_merchant(), verified_merchant()
    db.session.commit()
    endpoint = _endpoint(user.id, ["flow.enrolled"])
    second = _endpoint(user.id, ["flow.enrolled", "contact.bounced"])
    _endpoint(other.id, ["flow.enrolled"])
    data = {"flowId": str(uuid.uuid4()), "contactId": str(uuid.uuid4())}

    with pytest.raises(RuntimeError), transaction():  # rolled back: nothing was written
        assert webhook_events.emit(user.id, "flow.enrolled", data) == 2
        raise RuntimeError("the change failed")
    assert _events(user.id) == []

    with transaction():
        assert webhook_events.emit(user.id, "contact.bounced", {"contactId": None}) == 1
        assert webhook_events.emit(user.id, "flow.enrolled", data) == 2
    event = next(e for e in _events(user.id) if e.type == "flow.enrolled")
    assert event.data == data
    targets = db.session.scalars(sa.select(WebhookDelivery.endpoint_id).where(WebhookDelivery.event_id == event.id))
    assert set(targets) == {endpoint, second}
    assert _types(other.id) == {}  # the other merchant's endpoint never hears of it

    # A disabled endpoint gets nothing new.
    webhooks.update_endpoint(user.id, second, {"enabled": False})
    with transaction():
        assert webhook_events.emit(user.id, "contact.bounced", {"contactId": None}) == 0
        assert webhook_events.emit(user.id, "flow.enrolled", data) == 1
    with pytest.raises(UnknownEventType):  # never a type outside the catalogue
        webhook_events.emit(user.id, "flow.exploded", data)


def test_events_a_month_old_with_nothing_left_to_deliver_are_purged(ctx):
    user = verified_merchant()
    endpoint = _endpoint(user.id, ["flow.enrolled"])
    with transaction():
        for step in range(3):
            webhook_events.emit(user.id, "flow.enrolled", {"step": step})
    old, pending_old, recent = _events(user.id)
    db.session.execute(sa.update(WebhookEvent).where(WebhookEvent.id.in_([old.id, pending_old.id]))
                       .values(created_at=sa.func.now() - sa.text("interval '31 days'")))
    db.session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.event_id.in_([old.id, recent.id]))
                       .values(status="succeeded"))
    db.session.commit()
    assert webhook_delivery.purge_old() == 1
    assert {e.id for e in _events(user.id)} == {pending_old.id, recent.id}
    assert db.session.scalar(sa.select(sa.func.count()).where(WebhookDelivery.endpoint_id == endpoint)) == 2
