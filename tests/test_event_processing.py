"""Event processing against the real database: contacts, activity, identity merging, quarantine,
and concurrent workers that never process an event twice."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (
    Contact,
    ContactActivity,
    ContactIdentity,
    DataEvent,
    EventFailure,
)
from app.services import event_processing
from app.sources.normalize import sha256_email
from tests.support.lock_waits import until_a_transaction_waits
from tests.support.sources import (
    capi_event,
    dumps,
    make_merchant,
    make_source,
    shopify_headers,
    shopify_order,
)


def _add(source, event_type: str, data) -> DataEvent:
    event = DataEvent(data_source_id=source.id, event_type=event_type, event_data=data)
    db.session.add(event)
    db.session.commit()
    return event


def _contacts(user) -> list[Contact]:
    db.session.expire_all()
    return db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id).order_by(Contact.created_at)).all()


def _activities(contact) -> list[ContactActivity]:
    return db.session.scalars(sa.select(ContactActivity).where(ContactActivity.contact_id == contact.id)
                              .order_by(ContactActivity.occurred_at)).all()


@pytest.fixture()
def merchant(app_ctx):
    return make_merchant()


def test_shopify_order_becomes_a_contact_with_activity(merchant):
    shop, _ = make_source(merchant, "shopify")
    event = _add(shop, "orders/create", shopify_order())
    assert event_processing.process_batch() == 1
    (contact,) = _contacts(merchant)
    assert (contact.email, contact.phone, contact.first_name, contact.last_name) == \
        ("jon@example.com", "+16135551212", "Jon", "Snow")
    assert contact.external_ids == {"shopifyCustomerId": "115310627314723954"}
    assert contact.consent == {"email": "subscribed", "sms": "subscribed", "whatsapp": "subscribed"}
    (activity,) = _activities(contact)
    assert activity.event_type == "order_placed" and activity.original_name == "orders/create"
    assert activity.properties["value"] == 199.0 and activity.data_event_id == event.id
    db.session.refresh(event)
    assert event.processed_at is not None
    kinds = set(db.session.scalars(sa.select(ContactIdentity.kind).where(ContactIdentity.contact_id == contact.id)))
    assert kinds == {"email", "email_sha256", "phone", "phone_sha256", "shopifyCustomerId"}


def test_a_batch_takes_its_events_in_the_order_they_arrived(merchant):
    """The last of three updates to a customer wins, though it lies between the others in the table."""
    shop, _ = make_source(merchant, "shopify")
    customer = {"id": 115310627314723954, "email": "jon@example.com", "last_name": "Snow"}
    for name, minutes_ago in (("Jon", 2), ("Aegon", 0), ("Aemon", 1)):  # stored in this order
        event = _add(shop, "customers/update", {**customer, "first_name": name})
        db.session.execute(sa.update(DataEvent).where(DataEvent.id == event.id).values(
            created_at=DataEvent.created_at - sa.func.make_interval(0, 0, 0, 0, 0, minutes_ago)))
        db.session.commit()
    assert event_processing.process_batch() == 3
    (contact,) = _contacts(merchant)
    assert contact.first_name == "Aegon"


def test_processing_twice_changes_nothing(merchant):
    shop, _ = make_source(merchant, "shopify")
    _add(shop, "orders/create", shopify_order())
    event_processing.process_batch()
    assert event_processing.process_batch() == 0
    assert len(_contacts(merchant)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ContactActivity)) == 1


def test_hashed_pixel_identity_meets_the_shopify_customer(merchant):
    pixel, _ = make_source(merchant, "facebook_pixel")
    shop, _ = make_source(merchant, "shopify")
    _add(pixel, "AddToCart", capi_event("AddToCart", "c1", email_sha256=sha256_email("jon@example.com")))
    event_processing.process_batch()
    (anonymous,) = _contacts(merchant)
    assert anonymous.email is None
    _add(shop, "orders/create", shopify_order())
    event_processing.process_batch()
    (contact,) = _contacts(merchant)
    assert contact.id == anonymous.id and contact.email == "jon@example.com"
    assert sorted(a.event_type for a in _activities(contact)) == ["added_to_cart", "order_placed"]


def test_an_event_naming_two_contacts_merges_them(merchant):
    gtm, _ = make_source(merchant, "gtm")
    _add(gtm, "page_view", {"name": "page_view", "client_id": "cid-1", "params": {"email": "ann@example.com"}})
    _add(gtm, "login", {"name": "login", "client_id": "cid-2", "user_id": "user-7", "params": {}})
    event_processing.process_batch()
    assert len(_contacts(merchant)) == 2
    _add(gtm, "sign_up", {"name": "sign_up", "client_id": "cid-2", "params": {"email": "ann@example.com"}})
    event_processing.process_batch()
    (survivor,) = _contacts(merchant)
    assert survivor.email == "ann@example.com"
    assert survivor.external_ids["ga4UserId"] == "user-7"
    assert len(_activities(survivor)) == 3


def test_different_people_sharing_a_device_are_not_merged(merchant):
    gtm, _ = make_source(merchant, "gtm")
    _add(gtm, "login", {"name": "login", "client_id": "family-pc", "params": {"email": "ann@example.com"}})
    _add(gtm, "login", {"name": "login", "client_id": "kid-phone", "params": {"email": "bob@example.com"}})
    event_processing.process_batch()
    _add(gtm, "page_view", {"name": "page_view", "client_id": "kid-phone",
                            "params": {"email": "ann@example.com"}})  # a shared device, another person
    event_processing.process_batch()
    assert sorted(c.email for c in _contacts(merchant)) == ["ann@example.com", "bob@example.com"]


def test_anonymous_events_are_processed_without_a_contact(merchant):
    pixel, _ = make_source(merchant, "facebook_pixel")
    event = _add(pixel, "PageView", capi_event("PageView"))
    assert event_processing.process_batch() == 1
    db.session.refresh(event)
    assert event.processed_at is not None and _contacts(merchant) == []


def test_poison_event_is_quarantined_and_blocks_nothing(merchant):
    shop, _ = make_source(merchant, "shopify")
    bad = _add(shop, "orders/create", {**shopify_order(), "total_price": "lots"})
    good = _add(shop, "orders/create", shopify_order(order_id=2, email="ok@example.com", customer_id=2))
    assert event_processing.process_batch() == 2
    failure = db.session.get(EventFailure, bad.id)
    assert failure.quarantined_at is not None and "total_price" in failure.last_error
    db.session.refresh(good)
    assert good.processed_at is not None
    assert [c.email for c in _contacts(merchant)] == ["ok@example.com"]


def test_an_event_that_keeps_failing_is_quarantined_after_three_attempts(merchant, monkeypatch):
    shop, _ = make_source(merchant, "shopify")
    cursed = _add(shop, "customers/update", {"id": 77, "email": "cursed@example.com"})
    fine = _add(shop, "customers/update", {"id": 78, "email": "fine@example.com"})
    real = event_processing.normalize

    def flaky(source_type, event_type, data):
        if data.get("id") == 77:
            raise RuntimeError("database hiccup")
        return real(source_type, event_type, data)

    monkeypatch.setattr(event_processing, "normalize", flaky)
    for attempt in range(1, 4):
        event_processing.process_batch()
        db.session.expire_all()
        failure = db.session.get(EventFailure, cursed.id)
        assert failure.attempts == attempt
        assert (failure.quarantined_at is not None) == (attempt == 3)
    assert db.session.get(DataEvent, cursed.id).processed_at is not None
    assert db.session.get(DataEvent, fine.id).processed_at is not None
    assert [c.email for c in _contacts(merchant)] == ["fine@example.com"]


def test_a_contacts_own_unsubscribe_survives_synced_consent(merchant):
    shop, _ = make_source(merchant, "shopify")
    _add(shop, "customers/update", {"id": 5, "email": "eve@example.com",
                                    "email_marketing_consent": {"state": "subscribed"}})
    event_processing.process_batch()
    (contact,) = _contacts(merchant)
    contact.consent, contact.consent_sources = {"email": "unsubscribed"}, {"email": "contact"}
    db.session.commit()
    _add(shop, "customers/update", {"id": 5, "email": "eve@example.com",
                                    "email_marketing_consent": {"state": "subscribed"}})
    event_processing.process_batch()
    assert _contacts(merchant)[0].consent["email"] == "unsubscribed"


def test_two_workers_never_process_an_event_twice(app, committed_db):
    with app.app_context():
        merchant = make_merchant()
        pixel, _ = make_source(merchant, "facebook_pixel")
        people = [sha256_email(f"p{i}@example.com") for i in range(300)]
        rows = [{"dataSourceId": pixel.id, "eventType": "ViewContent",
                 "eventData": capi_event("ViewContent", f"e{i}", email_sha256=people[i % 300])} for i in range(3000)]
        db.session.execute(sa.insert(DataEvent.__table__), rows)
        db.session.commit()

    def work() -> None:
        with app.app_context():
            event_processing.process_pending(batch_size=200)
            db.session.remove()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with app.app_context():
        pending = db.session.scalar(sa.select(sa.func.count()).where(DataEvent.processed_at.is_(None)))
        activities = db.session.scalar(sa.select(sa.func.count()).select_from(ContactActivity))
        contacts = db.session.scalar(sa.select(sa.func.count()).select_from(Contact))
    assert (pending, activities, contacts) == (0, 3000, 300)


def test_a_merge_waits_for_a_batch_still_writing_for_the_contact_it_removes(app, committed_db, monkeypatch):
    """A batch of known customers is resolved without the merchant's lock; a merge that removes one
    of its contacts meanwhile waits for it to commit, then moves what it wrote rather than losing it."""
    with app.app_context():
        merchant = make_merchant()
        merchant_id = merchant.id
        source, _ = make_source(merchant, "gtm")
        gtm = SimpleNamespace(id=source.id)
        _add(gtm, "page_view", {"name": "page_view", "client_id": "cid-1", "params": {"email": "ann@example.com"}})
        _add(gtm, "login", {"name": "login", "client_id": "cid-2", "user_id": "user-7", "params": {}})
        event_processing.process_batch()
        _add(gtm, "page_view", {"name": "page_view", "client_id": "cid-2", "params": {}})  # known: no lock
    written, go = threading.Event(), threading.Event()
    enroll = event_processing.flows.enroll

    def held_open(located):  # the first batch stops after writing its activity, uncommitted
        if not written.is_set():
            written.set()
            assert go.wait(30)
        enroll(located)

    monkeypatch.setattr(event_processing.flows, "enroll", held_open)

    def process_one() -> None:
        with app.app_context():
            assert event_processing.process_batch(batch_size=1) == 1
            db.session.remove()

    first = threading.Thread(target=process_one)
    first.start()
    assert written.wait(30)
    with app.app_context():  # the merging event: cid-2 is ann, so contact B is folded into A
        _add(gtm, "sign_up", {"name": "sign_up", "client_id": "cid-2", "params": {"email": "ann@example.com"}})
    merging = threading.Thread(target=process_one)
    merging.start()
    with app.app_context():
        until_a_transaction_waits()  # the merge, for the first batch
    go.set()
    first.join(30)
    merging.join(30)
    with app.app_context():
        (survivor,) = _contacts(SimpleNamespace(id=merchant_id))
        assert survivor.email == "ann@example.com"
        assert sorted(a.original_name for a in _activities(survivor)) == ["login", "page_view", "page_view", "sign_up"]


def test_ingested_events_are_processed_by_a_real_worker(app, live_client, celery_worker):
    with app.app_context():
        shop_id = make_source(make_merchant(), "shopify")[0].id
    body = dumps(shopify_order(email="worker@example.com"))
    assert live_client.post(f"/ingest/shopify/{shop_id}", data=body, headers=shopify_headers(body)).status_code == 202
    deadline = time.monotonic() + 20
    with app.app_context():
        while time.monotonic() < deadline:
            contact = db.session.scalar(sa.select(Contact).where(Contact.email == "worker@example.com"))
            db.session.rollback()
            if contact:
                break
            time.sleep(0.1)
    assert contact is not None
