"""Attribution: orders credited to the message a contact last clicked or opened, within the merchant's
windows, once per order, shown in campaign stats per channel and currency. End to end: campaigns
sent by a real worker to the SMTP sink, links followed through the app, Shopify orders ingested over
HTTP and processed by the worker."""
from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from app import task_names as tasks
from app.extensions import db
from app.models import Attribution, CampaignChannel, Contact, DataEvent, Delivery, User
from app.services import campaign_stats, event_processing, settings
from tests.support import processes
from tests.support.accounts import signed_in
from tests.support.campaigns import campaign_on, verified_sender
from tests.support.sources import dumps, make_merchant, make_source, shopify_headers, shopify_order
from tests.test_email_channel import tracked_links

CAMPAIGNS = "/api/v1/campaigns"
EMAIL = {"fromEmail": "news@shop.com", "subject": "Hi {{ contact.firstName }}",
         "html": '<html><body><a href="https://shop.test/sale">Sale</a></body></html>'}
JON, ANN = "jon@example.com", "ann@example.com"


def _order(order_id: int, at: datetime, email: str = JON, total: str = "199.00", currency: str = "USD",
           customer_id: int = 1001) -> dict[str, Any]:
    order = shopify_order(order_id=order_id, email=email, total=total, customer_id=customer_id)
    order["customer"]["phone"] = None  # the helper's phone would tie every buyer to one contact
    order.update(created_at=at.isoformat() + "+00:00", currency=currency)
    return order


# --- End to end ------------------------------------------------------------------------------------

def _wait_processed(app, count: int) -> None:
    """Until `count` events are processed; beat's sweep is played by hand (ingest's hint is debounced)."""
    celery_app = app.extensions["celery"]

    def processed() -> bool:
        with app.app_context():
            done = db.session.scalar(sa.select(sa.func.count()).where(DataEvent.processed_at.is_not(None)))
            db.session.remove()
        if done < count:
            celery_app.send_task(tasks.PROCESS_PENDING)
        return done == count

    processes.wait_until(processed, timeout=60, what=f"{count} events processed", interval=0.5)


def test_orders_are_credited_to_the_last_touch_within_its_window_once(app, live_client, celery_worker, smtp_sink):
    _, headers = signed_in(live_client, email="owner@example.com")
    for email, name in ((JON, "Jon"), (ANN, "Ann")):
        assert live_client.post("/api/v1/contacts", headers=headers,
                                json={"email": email, "firstName": name}).status_code == 201
    with app.app_context():
        user = db.session.scalars(sa.select(User).where(User.email == "owner@example.com")).one()
        user.is_verified = True
        verified_sender(user.id)
        db.session.commit()
        shop_id = make_source(user, "shopify")[0].id
        winter = campaign_on(user, "email", EMAIL, name="Winter sale")[0].id
        spring = campaign_on(user, "email", EMAIL, name="Spring sale")[0].id
        db.session.remove()
    for campaign_id in (winter, spring):
        assert live_client.post(f"{CAMPAIGNS}/{campaign_id}/launch", headers=headers).status_code == 200
    mails = smtp_sink.wait_for(5, timeout=60)  # the owner's confirmation mail and two campaigns to two people

    def jons(campaign_id: uuid.UUID) -> dict[str, list[str]]:
        with app.app_context():
            ids = {str(i) for i in db.session.scalars(sa.select(Delivery.id).where(Delivery.campaign_id == campaign_id))}
            db.session.remove()
        (mail,) = [m for m in mails if list(m.recipients) == [JON] and m.message["X-Herald-Delivery"] in ids]
        return tracked_links(mail.html())

    # Jon clicks the spring sale, then opens the winter sale: the open is his latest touch.
    clicked = live_client.get(f"/t/c/{jons(spring)['c'][0]}")
    assert clicked.headers["Location"] == \
        "https://shop.test/sale?utm_source=herald&utm_medium=email&utm_campaign=spring-sale"
    assert live_client.get(f"/t/o/{jons(winter)['o'][0]}").status_code == 200
    with app.app_context():
        jon_id = db.session.scalar(sa.select(Contact.id).where(Contact.email == JON))
        touched = dict(db.session.execute(sa.select(Delivery.campaign_id, sa.func.coalesce(
            Delivery.clicked_at, Delivery.opened_at)).where(Delivery.contact_id == jon_id)).all())
        db.session.remove()
    clicked_at, opened_at = touched[spring], touched[winter]

    orders = [
        _order(1, clicked_at - timedelta(hours=1)),  # before any touch
        _order(2, opened_at + timedelta(hours=12), total="49.90"),  # the open, within its day
        _order(2, opened_at + timedelta(hours=12), total="49.90"),  # the same order again
        _order(3, opened_at + timedelta(days=2), total="120.00", currency="EUR"),  # the open is too old: the click
        _order(4, clicked_at + timedelta(days=5, minutes=1)),  # past the click's five days
        _order(5, opened_at + timedelta(hours=1), email=ANN, customer_id=1002),  # Ann touched nothing
    ]
    for order in orders:
        body = dumps(order)
        assert live_client.post(f"/ingest/shopify/{shop_id}", data=body,
                                headers=shopify_headers(body)).status_code == 202
    _wait_processed(app, len(orders))

    with app.app_context():
        credits = db.session.scalars(sa.select(Attribution).order_by(Attribution.order_key)).all()
        assert [(c.order_key, c.campaign_id, c.touch, c.revenue, c.currency, c.contact_id) for c in credits] == [
            ("order:2", winter, "open", Decimal("49.90"), "USD", jon_id),
            ("order:3", spring, "click", Decimal("120.00"), "EUR", jon_id),
        ]
        assert (credits[0].touched_at, credits[1].touched_at) == (opened_at, clicked_at)
        db.session.remove()
    for campaign_id, revenue in ((winter, [{"currency": "USD", "amount": "49.90"}]),
                                 (spring, [{"currency": "EUR", "amount": "120.00"}])):
        stats = live_client.get(f"{CAMPAIGNS}/{campaign_id}/stats", headers=headers).get_json()
        (channel,) = stats["channels"]
        for shown in (channel, stats["totals"]):
            assert (shown["attributedOrders"], shown["attributedRevenue"]) == (1, revenue)


# --- Windows, keys and sums, against the service ---------------------------------------------------

@pytest.fixture()
def shop(app_ctx):
    """A merchant, their Shopify source and Jon (a contact made by his first order)."""
    user = make_merchant()
    source, _ = make_source(user, "shopify")
    _process(source, _order(100, datetime(2026, 1, 1)))
    jon = db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id)).one()
    return user, source, jon


def _process(source, *orders: dict[str, Any]) -> None:
    db.session.add_all([DataEvent(data_source_id=source.id, event_type="orders/create", event_data=order)
                        for order in orders])
    db.session.commit()
    event_processing.process_batch()


def _touch(user: User, contact: Contact, channel_type: str = "email", **times: datetime) -> Delivery:
    campaign, channel = campaign_on(user, channel_type, {"body": "x"} if channel_type == "sms" else EMAIL,
                                    name=f"Campaign {uuid.uuid4().hex[:6]}")
    delivery = Delivery(campaign_id=campaign.id, channel_id=channel.id, contact_id=contact.id,
                        channel_type=channel_type, status="delivered", **times)
    db.session.add(delivery)
    db.session.commit()
    return delivery


def _credits() -> dict[str, Attribution]:
    db.session.expire_all()
    return {credit.order_key: credit for credit in db.session.scalars(sa.select(Attribution))}


NOON = datetime(2026, 3, 10, 12, 0)


def test_the_merchants_windows_apply(shop):
    user, source, jon = shop
    settings.update_settings(user.id, {"attribution": {"click_window_days": 2, "open_window_days": 0}})
    clicked = _touch(user, jon, clicked_at=NOON)
    _touch(user, jon, opened_at=NOON + timedelta(days=3))  # opens never count now
    _process(source, _order(1, NOON + timedelta(days=1, hours=23)), _order(2, NOON + timedelta(days=3, hours=1)))
    assert {key: credit.delivery_id for key, credit in _credits().items()} == {"order:1": clicked.id}


def test_a_click_wins_a_tie_and_a_later_click_beats_an_earlier_open(shop):
    user, source, jon = shop
    email = _touch(user, jon, clicked_at=NOON, opened_at=NOON)  # a click stamps the open too
    sms = _touch(user, jon, "sms", clicked_at=NOON + timedelta(hours=2))
    _process(source, _order(1, NOON + timedelta(hours=1)), _order(2, NOON + timedelta(hours=3)))
    credits = _credits()
    assert (credits["order:1"].delivery_id, credits["order:1"].touch) == (email.id, "click")
    assert (credits["order:2"].delivery_id, credits["order:2"].channel_type) == (sms.id, "sms")


def test_one_batch_credits_an_order_once_in_one_statement(shop):
    user, source, jon = shop
    delivery = _touch(user, jon, clicked_at=NOON)
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.startswith("EXECUTE herald_credit_orders"):  # the crediting statement, prepared
            statements.append(statement)

    engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        orders = [_order(1000 + i, NOON + timedelta(minutes=i), total=f"{i}.25") for i in range(1, 40)]
        _process(source, *orders, copy.deepcopy(orders[0]))
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1
    credits = _credits()
    assert len(credits) == 39 and {c.delivery_id for c in credits.values()} == {delivery.id}
    assert credits["order:1001"].occurred_at == NOON + timedelta(minutes=1)


def test_orders_without_an_id_a_value_or_a_currency(shop):
    user, source, jon = shop
    delivery = _touch(user, jon, clicked_at=NOON)
    nameless = _order(0, NOON + timedelta(hours=1), total="10.00", currency="JPY")
    del nameless["id"]
    free = _order(7, NOON + timedelta(hours=2))
    del free["total_price"], free["line_items"]
    unpriced = _order(8, NOON + timedelta(hours=3), total="5.5")
    unpriced.pop("currency")
    _process(source, nameless, free, unpriced)
    credits = _credits()
    (event_key,) = [key for key in credits if key.startswith("event:")]
    assert (credits[event_key].revenue, credits[event_key].currency) == (Decimal("10.00"), "JPY")
    assert credits["order:7"].revenue is None and credits["order:8"].currency is None

    stats = campaign_stats.campaign_stats(user.id, delivery.campaign_id)
    assert stats.totals.credited.orders == 3
    assert [(m.currency, m.amount) for m in stats.totals.credited.amounts] == [("JPY", "10"), (None, "5.50")]


def test_stats_add_up_channels_per_currency(shop):
    user, source, jon = shop
    email = _touch(user, jon, clicked_at=NOON)
    campaign_id = email.campaign_id
    sms_channel = CampaignChannel(campaign_id=campaign_id, channel_type="sms", config={"body": "x"})
    db.session.add(sms_channel)
    db.session.flush()
    db.session.add(Delivery(campaign_id=campaign_id, channel_id=sms_channel.id, contact_id=jon.id, channel_type="sms",
                            status="sent", clicked_at=NOON + timedelta(days=1)))
    db.session.commit()
    _process(source, _order(1, NOON + timedelta(hours=1), total="10.10", currency="EUR"),
             _order(2, NOON + timedelta(hours=2), total="0.5", currency="USD"),
             _order(3, NOON + timedelta(days=1, hours=1), total="2.40", currency="EUR"))
    stats = campaign_stats.campaign_stats(user.id, campaign_id)
    shown = {c.channel_type: (c.credited.orders, [(m.currency, m.amount) for m in c.credited.amounts])
             for c in stats.channels}
    assert shown == {"email": (2, [("EUR", "10.10"), ("USD", "0.50")]), "sms": (1, [("EUR", "2.40")])}
    assert (stats.totals.credited.orders, [(m.currency, m.amount) for m in stats.totals.credited.amounts]) == \
        (3, [("EUR", "12.50"), ("USD", "0.50")])


def test_a_credit_follows_its_contact_into_a_merge(app_ctx):
    user = make_merchant()
    gtm, _ = make_source(user, "gtm")

    def event(name: str, client_id: str, **params: Any) -> DataEvent:
        user_id = params.pop("user_id", None)
        return DataEvent(data_source_id=gtm.id, event_type=name, event_data={
            "name": name, "client_id": client_id, "user_id": user_id, "params": params,
            "timestamp_micros": int((NOON + timedelta(hours=1)).timestamp() * 1_000_000)})

    db.session.add_all([event("page_view", "cid-1", email="ann@example.com"), event("login", "cid-2", user_id="u-7")])
    db.session.commit()
    event_processing.process_batch()
    shopper = db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id, Contact.email.is_(None))).one()
    _touch(user, shopper, clicked_at=NOON)
    db.session.add(event("purchase", "cid-2", transaction_id="T-1", value=10, currency="EUR"))
    db.session.commit()
    event_processing.process_batch()
    assert _credits()["order:T-1"].contact_id == shopper.id

    db.session.add(event("sign_up", "cid-2", email="ann@example.com"))  # the two are one person
    db.session.commit()
    event_processing.process_batch()
    (survivor,) = db.session.scalars(sa.select(Contact.id).where(Contact.user_id == user.id)).all()
    assert _credits()["order:T-1"].contact_id == survivor
