"""Triggered flows: contacts enter with their own events (as processing marks them processed), each
step goes out after its delay through the campaign send engine, once per enrolment, and exits,
unsubscribes, pauses and stops are honoured right before each step. Time moves by the clock the
services read, never by sleeping."""
from __future__ import annotations

import dataclasses
import itertools
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app import clock
from app.errors import NotFound
from app.extensions import db
from app.models import (
    AccountDeletion,
    Campaign,
    Contact,
    ContactActivity,
    DataEvent,
    Delivery,
    EventFailure,
    FlowEnrollment,
    User,
)
from app.services import account_deletion, event_processing, flows, sending, settings
from app.sources.normalize import sha256_email
from tests.emulators.twilio import TwilioEmulator
from tests.support.accounts import signed_in, unique_email
from tests.support.campaigns import EMAIL_CONFIG, verified_merchant, verified_sender
from tests.support.lock_waits import until_a_transaction_waits
from tests.support.providers import add_provider_account
from tests.support.sources import make_source
from tests.test_email_channel import tracked_links

HOUR = 3600
REMINDER = {**EMAIL_CONFIG, "subject": "Your cart, {{ contact.firstName }}",
            "html": '<p>Finish here: <a href="{{ event.checkoutUrl }}">checkout</a> ({{ event.itemCount }} items, '
                    '{{ event.value }} {{ event.currency }})</p>',
            "text": "Finish here: {{ event.checkoutUrl }}"}
ABANDONED = {"name": "Abandoned checkout", "trigger": {"event": "checkout_started"},
             "exitWhen": [{"event": "order_placed"}], "reentry": {"mode": "once"},
             "steps": [{"delaySeconds": HOUR, "channelType": "email", "config": REMINDER}]}
TWILIO = {"accountSid": "AC" + "5f" * 16, "authToken": "flow-twilio-token", "fromNumber": "+15005550006"}
_ids = itertools.count(7_000_000)


@pytest.fixture()
def shop(ctx):
    user = verified_merchant()
    source, _ = make_source(user, "shopify")
    return user, source


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def _customer(email: str, phone: str | None = None) -> dict[str, Any]:
    customer = {"id": 5_000 + sum(map(ord, email)), "email": email, "first_name": "Jon",
                "email_marketing_consent": {"state": "subscribed"}}
    if phone:
        customer |= {"phone": phone, "sms_marketing_consent": {"state": "subscribed"}}
    return customer


def _checkout(email: str, at: datetime | None = None, phone: str | None = None) -> tuple[str, dict[str, Any]]:
    checkout_id = next(_ids)
    return "checkouts/create", {
        "id": checkout_id, "token": f"tok{checkout_id}", "email": email, "created_at": _iso(at or clock.now()),
        "abandoned_checkout_url": f"https://shop.test/checkouts/{checkout_id}/recover", "total_price": "40.00",
        "currency": "USD", "customer": _customer(email, phone),
        "line_items": [{"product_id": 632910392, "quantity": 2, "price": "20.00"}]}


def _order(email: str, at: datetime | None = None) -> tuple[str, dict[str, Any]]:
    order_id = next(_ids)
    return "orders/create", {"id": order_id, "email": email, "total_price": "40.00", "currency": "USD",
                             "created_at": _iso(at or clock.now()), "customer": _customer(email),
                             "line_items": [{"product_id": 632910392, "quantity": 2, "price": "20.00"}]}


def _process(source, *events: tuple[str, dict[str, Any]]) -> None:
    db.session.add_all([DataEvent(data_source_id=source.id, event_type=topic, event_data=payload)
                        for topic, payload in events])
    db.session.commit()
    event_processing.process_pending(time_budget=10)


def _hold_the_first_batch_open(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The first batch processed stops after enrolment, its transaction open, and says so
    (`entered`) until told to go on (`go`)."""
    entered, go = threading.Event(), threading.Event()
    store_derived = event_processing.contact_timezones.store_derived

    def held_open(rows):  # runs after enrolment, in the batch's transaction
        if not entered.is_set():
            entered.set()
            assert go.wait(30)
        store_derived(rows)

    monkeypatch.setattr(event_processing.contact_timezones, "store_derived", held_open)
    return entered, go


def _in_thread(ctx, work) -> threading.Thread:
    """`work` started in a thread of its own, in an app context (its own session)."""
    def run() -> None:
        with ctx.app_context():
            work()
            db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _running(user, definition: dict[str, Any] = ABANDONED):
    flow = flows.create(user.id, definition)
    return flows.activate(user.id, flow.id)


def _tick(after: timedelta = timedelta(0)) -> None:
    """What beat does: dispatch the due steps; then the senders the dispatch started send them."""
    if after:
        clock.advance(after)
    flows.dispatch_all_due()
    db.session.expire_all()
    for channel_id in db.session.scalars(sa.select(Delivery.channel_id).where(Delivery.status == "queued").distinct()):
        sending.send_channel(channel_id)


def _enrollments(flow) -> list[FlowEnrollment]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(FlowEnrollment).where(FlowEnrollment.flow_id == flow.id)
                                   .order_by(FlowEnrollment.triggered_at)))


def _mail_to(sink, address: str) -> list:
    return [m for m in sink.messages if address in m.recipients]


# --- Behaviour -------------------------------------------------------------------------------------

def test_an_abandoned_checkout_gets_one_reminder_after_the_delay_with_the_events_properties(ctx, shop, smtp_sink):
    user, source = shop
    flow = _running(user)
    _process(source, _checkout("jon@example.com"))
    (enrolled,) = _enrollments(flow)
    assert (enrolled.status, enrolled.step) == ("active", 0)
    assert enrolled.next_due_at == enrolled.triggered_at + timedelta(seconds=HOUR)

    _tick(timedelta(minutes=59))
    assert smtp_sink.messages == []
    _tick(timedelta(minutes=2))
    (mail,) = smtp_sink.wait_for(1)
    assert list(mail.recipients) == ["jon@example.com"] and mail.message["Subject"] == "Your cart, Jon"
    html = mail.html()
    assert "(2 items, 40.0 USD)" in html
    # The checkout's own recovery link, tracked like any link in a campaign.
    assert "https://shop.test/checkouts/" not in html and tracked_links(html)["c"]
    _tick(timedelta(days=2))
    assert len(smtp_sink.messages) == 1
    (done,) = _enrollments(flow)
    assert (done.status, done.step, done.next_due_at) == ("completed", 1, None)
    stats = flows.stats(user.id, flow.id)
    assert (stats.entered, stats.active, stats.completed, stats.exited) == (1, 0, 1, 0)
    assert (stats.steps[0].channel.sent_count, stats.steps[0].channel.delivered_count) == (1, 1)
    # Deleted after sending, the flow is gone from the API while the links in its message still work.
    flows.stop(user.id, flow.id)
    flows.delete(user.id, flow.id)
    with pytest.raises(NotFound):
        flows.get_flow(user.id, flow.id)
    assert ctx.test_client().get(f"/t/c/{tracked_links(html)['c'][0]}").status_code == 302


def test_buying_within_the_delay_exits_and_nothing_is_sent(shop, smtp_sink):
    user, source = shop
    flow = _running(user)
    _process(source, _checkout("jon@example.com"))
    clock.advance(timedelta(minutes=20))
    _process(source, _order("jon@example.com"))
    (enrolled,) = _enrollments(flow)
    assert (enrolled.status, enrolled.exit_reason, enrolled.next_due_at) == ("exited", "event:order_placed", None)
    _tick(timedelta(hours=2))
    assert smtp_sink.messages == []
    assert flows.stats(user.id, flow.id).exit_reasons == {"event:order_placed": 1}


def test_an_order_processed_before_its_checkout_still_exits_it(shop, smtp_sink):
    user, source = shop
    flow = _running(user)
    started = clock.now()
    _process(source, _order("jon@example.com", at=started + timedelta(minutes=5)))
    _process(source, _checkout("jon@example.com", at=started))
    (enrolled,) = _enrollments(flow)
    assert (enrolled.status, enrolled.exit_reason) == ("exited", "event:order_placed")
    _tick(timedelta(hours=2))
    assert smtp_sink.messages == []


@pytest.mark.parametrize(("mode", "reminders"), [("once", 1), ("always", 2), ("afterDays", 1)])
def test_two_checkouts_enrol_by_the_reentry_rule(shop, smtp_sink, mode, reminders):
    user, source = shop
    reentry = {"mode": mode, "days": 7} if mode == "afterDays" else {"mode": mode}
    flow = _running(user, {**ABANDONED, "reentry": reentry})
    _process(source, _checkout("jon@example.com"))
    clock.advance(timedelta(minutes=10))
    _process(source, _checkout("jon@example.com"))
    assert len(_enrollments(flow)) == reminders
    _tick(timedelta(hours=2))
    assert len(smtp_sink.wait_for(reminders)) == reminders
    _tick(timedelta(hours=2))
    assert len(smtp_sink.messages) == reminders


def test_after_days_lets_a_contact_in_again_once_the_days_have_passed(shop, smtp_sink):
    user, source = shop
    flow = _running(user, {**ABANDONED, "reentry": {"mode": "afterDays", "days": 7}})
    _process(source, _checkout("jon@example.com"))
    clock.advance(timedelta(days=6))
    _process(source, _checkout("jon@example.com"))
    clock.advance(timedelta(days=2))
    _process(source, _checkout("jon@example.com"))
    assert len(_enrollments(flow)) == 2


def test_after_days_decides_a_batch_of_a_months_checkouts_in_order(shop):
    """A batch that spans weeks (an import, a backlog): each checkout enters if `days` have passed
    since the contact's last entry, counting the entries made earlier in the same batch."""
    user, source = shop
    flow = _running(user, {**ABANDONED, "reentry": {"mode": "afterDays", "days": 7}})
    start = clock.now()
    clock.advance(timedelta(days=20))
    _process(source, _checkout("jon@example.com", at=start + timedelta(hours=1)))
    _process(source, *(_checkout("jon@example.com", at=start + timedelta(days=days)) for days in (16, 3, 10, 8)),
             _checkout("ann@example.com", at=start + timedelta(days=2)))
    emails = dict(db.session.execute(sa.select(Contact.id, Contact.email).where(Contact.user_id == user.id)).all())
    assert [(emails[e.contact_id], e.triggered_at - start) for e in _enrollments(flow)] == [
        ("jon@example.com", timedelta(hours=1)), ("ann@example.com", timedelta(days=2)),
        ("jon@example.com", timedelta(days=8)), ("jon@example.com", timedelta(days=16))]


def test_once_and_always_flows_enter_from_one_statement_whichever_comes_first(shop):
    """The flows a batch enters share one statement, in the order of their ids. Two `always` flows
    first in it (their onceKey NULL) must not make the column text for the `once` flow after them."""
    user, source = shop
    always = [_running(user, {**ABANDONED, "name": f"Always {i}", "reentry": {"mode": "always"}}) for i in range(2)]
    while True:  # a `once` flow whose id comes after both (one in three does)
        once = _running(user, {**ABANDONED, "name": "Once"})
        if once.id > max(flow.id for flow in always):
            break
        flows.stop(user.id, once.id)
    _process(source, _checkout("jon@example.com"))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EventFailure)) == 0
    assert [len(_enrollments(flow)) for flow in [*always, once]] == [1, 1, 1]


def test_an_event_entering_several_flows_gives_each_enrolment_an_id_of_its_own_in_time_order(shop):
    """Enrolment ids are made from the triggering activity row's (flows._entry_id): one event's
    enrolments in four flows differ, and a later batch's come after them."""
    user, source = shop
    running = [_running(user, {**ABANDONED, "name": f"Flow {mode}", "reentry": reentry})
               for mode, reentry in [("once", {"mode": "once"}), ("always", {"mode": "always"}),
                                     ("again", {"mode": "always"}), ("days", {"mode": "afterDays", "days": 7})]]

    def ids(email: str) -> list:
        _process(source, _checkout(email))
        contact_id, activity = db.session.execute(sa.select(ContactActivity.contact_id, ContactActivity.id).join(
            Contact).where(Contact.email == email)).one()
        entered = [e.id for flow in running for e in _enrollments(flow) if e.contact_id == contact_id]
        assert len(entered) == len(running) and all(e.bytes[:14] == activity.bytes[:14] for e in entered)
        return entered

    first, later = ids("jon@example.com"), ids("ann@example.com")
    assert len(set(first)) == 4 and max(first) < min(later)


def test_enrolment_id_places_count_among_a_merchants_flows_up_to_the_limit(shop, monkeypatch):
    """An activity row is one merchant's: each merchant's flows take places from 0, and a batch
    entering more of one merchant's flows than there are places fails rather than reuse one."""
    mine = [_running(shop[0], {**ABANDONED, "name": f"Mine {i}"}) for i in range(2)]
    theirs = _running(verified_merchant(), {**ABANDONED, "name": "Theirs"})
    running = [flows._Running(flow.id, flow.user_id, flow.trigger, flow.filter, flow.exit_when, flow.reentry,
                              flow.activated_at, False) for flow in [*mine, theirs]]
    assert list(flows._places(running).values()) == [0, 1, 0]
    monkeypatch.setattr(flows, "_PLACES", 1)
    with pytest.raises(RuntimeError, match="at most 1 flows of a merchant"):
        flows._places(running)


def test_concurrent_batches_enrol_a_contact_once_by_the_after_days_rule(ctx, shop, monkeypatch):
    """Two batches with a checkout each by the same person, the first still uncommitted when the
    second decides: the second waits for it (a lock per flow and contact) and lets nobody in twice."""
    user, source = shop
    flow = _running(user, {**ABANDONED, "reentry": {"mode": "afterDays", "days": 7}})
    _process(source, _order("jon@example.com"))  # jon is known before either batch
    entered, go = _hold_the_first_batch_open(monkeypatch)

    def process_one() -> None:
        db.session.add(DataEvent(data_source_id=source_id, event_type="checkouts/create",
                                 event_data=_checkout("jon@example.com")[1]))
        db.session.commit()
        assert event_processing.process_batch(batch_size=1) == 1

    source_id = source.id
    first = _in_thread(ctx, process_one)
    assert entered.wait(30)
    second = _in_thread(ctx, process_one)
    until_a_transaction_waits("advisory")  # the second batch, for the first one's (flow, contact)
    go.set()
    first.join(30)
    second.join(30)
    assert len(_enrollments(flow)) == 1


def test_a_flow_stopped_while_a_batch_enrols_in_it_exits_that_enrolment_too(ctx, shop, monkeypatch):
    """The stop waits for the batch that read the flow running (its lock on the flow), so it exits
    the entry that batch made instead of leaving it active in a completed flow."""
    user, source = shop
    flow = _running(user)
    entered, go = _hold_the_first_batch_open(monkeypatch)
    user_id, flow_id = user.id, flow.id
    db.session.add(DataEvent(data_source_id=source.id, event_type="checkouts/create",
                             event_data=_checkout("jon@example.com")[1]))
    db.session.commit()
    batch = _in_thread(ctx, lambda: event_processing.process_batch(batch_size=1))
    assert entered.wait(30)
    stop = _in_thread(ctx, lambda: flows.stop(user_id, flow_id))
    until_a_transaction_waits("transactionid")  # the stop, for the batch that holds the flow
    go.set()
    batch.join(30)
    stop.join(30)
    (enrolled,) = _enrollments(flow)
    assert (enrolled.status, enrolled.exit_reason) == ("exited", "flow_stopped")


def test_processing_the_same_event_again_enrols_nobody_twice(shop, caplog):
    user, source = shop
    flow = _running(user, {**ABANDONED, "reentry": {"mode": "always"}})
    _process(source, _checkout("jon@example.com"))
    # A retried batch: the event is claimed and processed again, with a new one beside it.
    db.session.execute(sa.update(DataEvent).values({DataEvent.processed_at: None}))
    db.session.commit()
    _process(source, _checkout("ann@example.com"))
    assert sorted(e.contact_id == _contact(user, "ann@example.com").id for e in _enrollments(flow)) == [False, True]
    assert "batch failed" not in caplog.text  # processed as a batch, not failed over to one by one


def test_only_events_after_activation_enrol_and_only_the_merchants_own(shop, smtp_sink):
    user, source = shop
    other = verified_merchant()
    other_source, _ = make_source(other, "shopify")
    before = clock.now() - timedelta(minutes=1)
    flow = _running(user)
    others_flow = _running(other)
    _process(source, _checkout("old@example.com", at=before), _checkout("jon@example.com"))
    assert [e.contact_id for e in _enrollments(flow)] == [_contact(user, "jon@example.com").id]
    assert _enrollments(others_flow) == []
    _process(other_source, _checkout("ann@example.com"))
    assert len(_enrollments(flow)) == 1 and len(_enrollments(others_flow)) == 1


def test_one_batch_of_two_merchants_events_enrols_each_in_its_own_flows(shop):
    user, source = shop
    other = verified_merchant()
    other_source, _ = make_source(other, "shopify")
    reentries = [{"mode": "afterDays", "days": 7}, {"mode": "always"}]
    ours = [_running(user, {**ABANDONED, "reentry": reentry}) for reentry in reentries]
    theirs = [_running(other, {**ABANDONED, "reentry": reentry}) for reentry in reentries]
    clock.advance(timedelta(minutes=10))
    earlier = clock.now() - timedelta(minutes=5)  # after the flows' activation
    topic, payload = _checkout("ann@example.com")
    db.session.add(DataEvent(data_source_id=other_source.id, event_type=topic, event_data=payload))
    _process(source, _checkout("jon@example.com", at=earlier), _checkout("jon@example.com"))  # one batch
    jon, ann = _contact(user, "jon@example.com").id, _contact(other, "ann@example.com").id
    assert [[e.contact_id for e in _enrollments(flow)] for flow in ours] == [[jon], [jon, jon]]
    assert [[e.contact_id for e in _enrollments(flow)] for flow in theirs] == [[ann], [ann]]


def _contact(user, email: str) -> Contact:
    return db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id, Contact.email == email)).one()


def test_trigger_filters_and_entry_filters_decide_who_enters(shop):
    user, source = shop
    flow = _running(user, {**ABANDONED, "trigger": {"event": "checkout_started", "where": {"value": {"gte": 30}}},
                           "filter": {"match": "all", "conditions": [
                               {"type": "attribute", "field": "email", "op": "contains", "value": "@vip."},
                               # Lists of values, text and others: written into the enrolling statement.
                               {"type": "group", "match": "any", "conditions": [
                                   {"type": "attribute", "field": "email", "op": "in",
                                    "value": ["ann@vip.example", "bob@vip.example"]},
                                   {"type": "attribute", "field": "attributes.tier", "op": "in",
                                    "value": [1, 2.5, True]}]}]}})
    small = _checkout("ann@vip.example")
    small[1]["total_price"] = "10.00"
    _process(source, _checkout("jon@example.com"), small, _checkout("eve@vip.example"), _checkout("bob@vip.example"))
    assert [e.contact_id for e in _enrollments(flow)] == [_contact(user, "bob@vip.example").id]


def _pixel_event(name: str, email: str) -> tuple[str, dict[str, Any]]:
    # In whole seconds: a second on, so that it happened after the flows were activated.
    return name, {"event_name": name, "event_time": int(clock.now().timestamp()) + 1, "event_id": f"ev{next(_ids)}",
                  "action_source": "website", "user_data": {"em": [sha256_email(email)]}}


def test_a_custom_event_enters_by_its_name_beside_flows_of_other_events(shop):
    """A custom event enters by its name (a flow of another event beside it, in the same statement),
    and the purchase in its batch ends the enrolment as it is written."""
    user, _ = shop
    pixel, _ = make_source(user, "facebook_pixel")
    quiz = _running(user, {**ABANDONED, "name": "Quiz", "trigger": {"event": "custom", "name": "QuizCompleted"}})
    carts = _running(user, {**ABANDONED, "name": "Carts", "trigger": {"event": "added_to_cart"},
                            "reentry": {"mode": "always"}})
    _process(pixel, _pixel_event("QuizCompleted", "ann@example.com"), _pixel_event("SpinTheWheel", "bob@example.com"),
             _pixel_event("AddToCart", "cal@example.com"), _pixel_event("AddToCart", "cal@example.com"),
             _pixel_event("Purchase", "ann@example.com"))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EventFailure)) == 0

    def actor(name: str) -> set[Any]:  # hashed emails only: a contact is known by what it did
        return set(db.session.scalars(sa.select(ContactActivity.contact_id).where(
            ContactActivity.user_id == user.id, ContactActivity.original_name == name)))

    assert len(actor("QuizCompleted") | actor("SpinTheWheel") | actor("AddToCart")) == 3
    assert {e.contact_id for e in _enrollments(quiz)} == actor("QuizCompleted") == actor("Purchase")
    assert [e.contact_id for e in _enrollments(carts)] == [*actor("AddToCart")] * 2
    assert [(e.status, e.exit_reason) for e in _enrollments(quiz)] == [("exited", "event:order_placed")]


def test_unsubscribing_skips_later_email_steps_and_the_sms_step_still_runs(ctx, shop, smtp_sink):
    user, source = shop
    add_provider_account(user, "sms", TWILIO)
    steps = [{"delaySeconds": 0, "channelType": "email", "config": REMINDER},
             {"delaySeconds": HOUR, "channelType": "email", "config": REMINDER},
             {"delaySeconds": HOUR, "channelType": "sms", "config": {"body": "Still yours: {{ event.checkoutUrl }}"}}]
    with TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}) as twilio:
        settings = ctx.config["HERALD_SETTINGS"]
        ctx.config["HERALD_SETTINGS"] = dataclasses.replace(settings, api_base_urls={
            **settings.api_base_urls, "TWILIO_API_BASE_URL": twilio.base_url})
        try:
            flow = _running(user, {**ABANDONED, "steps": steps})
            _process(source, _checkout("jon@example.com", phone="+16135551212"))
            _tick()
            (mail,) = smtp_sink.wait_for(1)
            unsubscribe = tracked_links(mail.html())["u"][0]
            assert ctx.test_client().post(f"/t/u/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            _tick(timedelta(hours=1, minutes=1))
            _tick(timedelta(hours=1, minutes=1))
        finally:
            ctx.config["HERALD_SETTINGS"] = settings
        assert len(smtp_sink.messages) == 1
        (sms,) = twilio.messages
        assert sms["to"] == "+16135551212" and "/l/" in sms["body"]
    stats = flows.stats(user.id, flow.id)
    assert [s.channel.ledger["sent"] + s.channel.ledger["delivered"] for s in stats.steps] == [1, 0, 1]
    assert stats.steps[1].channel.skip_reasons == {"consent_unsubscribed": 1}
    assert (stats.completed, stats.exited) == (1, 0)


def test_flow_steps_keep_the_frequency_caps_unless_exempt(shop, smtp_sink):
    user, source = shop
    settings.update_settings(user.id, {"frequency_caps": {"email": [{"messages": 1, "window_hours": 16}]}})
    step = {"delaySeconds": 0, "channelType": "email", "config": REMINDER}
    exempt = _running(user, {**ABANDONED, "name": "Back in stock", "exitWhen": [],
                             "steps": [{**step, "frequencyCapExempt": True}]})
    capped = _running(user, {**ABANDONED, "name": "Reminder", "exitWhen": [], "steps": [{**step, "delaySeconds": 60}]})
    _process(source, _checkout("jon@example.com"))
    _tick()
    _tick(timedelta(minutes=2))
    _tick(timedelta(minutes=2))
    assert flows.stats(user.id, exempt.id).steps[0].channel.ledger["delivered"] == 1
    # The exempt step's message counts toward the caps of the others.
    assert flows.stats(user.id, capped.id).steps[0].channel.skip_reasons == {"frequency_capped": 1}
    assert len(smtp_sink.messages) == 1
    assert flows.get_flow(user.id, exempt.id).steps[0].frequency_cap_exempt


def test_a_paused_flow_sends_nothing_until_resumed_then_once(shop, smtp_sink):
    user, source = shop
    flow = _running(user)
    _process(source, _checkout("jon@example.com"))
    flows.pause(user.id, flow.id)
    _tick(timedelta(hours=3))
    assert smtp_sink.messages == []
    flows.resume(user.id, flow.id)
    _tick()
    _tick(timedelta(minutes=5))
    assert len(smtp_sink.wait_for(1)) == 1
    _tick(timedelta(minutes=5))
    assert len(smtp_sink.messages) == 1


def test_stopping_exits_the_active_and_skips_what_was_queued(shop, smtp_sink):
    user, source = shop
    flow = _running(user, {**ABANDONED, "steps": [{"delaySeconds": 0, "channelType": "email", "config": REMINDER}]})
    _process(source, _checkout("jon@example.com"))
    flows.dispatch_all_due()
    _process(source, _checkout("ann@example.com", at=clock.now() + timedelta(hours=1)))
    flows.stop(user.id, flow.id)
    _tick(timedelta(hours=2))
    assert smtp_sink.messages == []
    stats = flows.stats(user.id, flow.id)
    assert (stats.status, stats.exited, stats.exit_reasons) == ("completed", 1, {"flow_stopped": 1})
    assert stats.steps[0].channel.skip_reasons == {"flow_stopped": 1}
    _process(source, _checkout("bob@example.com"))
    assert flows.stats(user.id, flow.id).entered == 2  # nobody enters a stopped flow


def test_a_deleted_flow_takes_its_enrolments_and_a_deleted_account_its_flows(shop):
    user, source = shop
    kept, deleted = _running(user), _running(user)
    _process(source, _checkout("jon@example.com"))
    deleted_id = deleted.id
    flows.stop(user.id, deleted_id)
    flows.delete(user.id, deleted_id)  # it never sent: removed, with its enrolments
    assert [e.flow_id for e in db.session.scalars(sa.select(FlowEnrollment))] == [kept.id]
    db.session.add(AccountDeletion(user_id=user.id))
    db.session.commit()
    assert account_deletion.delete_account(user.id, batch_size=1)
    assert db.session.scalars(sa.select(FlowEnrollment)).all() == []


def test_a_deleted_contact_exits_before_the_step(shop, smtp_sink):
    user, source = shop
    flow = _running(user)
    _process(source, _checkout("jon@example.com"))
    db.session.delete(_contact(user, "jon@example.com"))
    db.session.commit()
    _tick(timedelta(hours=2))
    assert smtp_sink.messages == []
    (enrolled,) = _enrollments(flow)
    assert (enrolled.status, enrolled.exit_reason) == ("exited", "contact_deleted")


def test_thousands_due_at_once_are_dispatched_in_batches_to_one_queue(shop):
    user, source = shop
    _running(user, {**ABANDONED, "reentry": {"mode": "always"}})
    _process(source, *[_checkout(f"p{i}@example.com") for i in range(1500)])
    clock.advance(timedelta(hours=1, seconds=1))
    assert flows.dispatch_due() == flows.DISPATCH_BATCH
    assert flows.dispatch_due() == 500
    db.session.expire_all()
    queued = db.session.scalar(sa.select(sa.func.count()).select_from(Delivery).where(Delivery.status == "queued"))
    assert queued == 1500


# --- The API ---------------------------------------------------------------------------------------

def test_the_api_creates_lists_moves_and_reports_a_flow(client):
    email = unique_email()
    _, headers = signed_in(client, email)
    user = db.session.scalars(sa.select(User).where(User.email == email)).one()
    user.is_verified = True
    created = client.post("/api/v1/flows", json=ABANDONED, headers=headers)
    assert created.status_code == 201, created.get_json()
    flow = created.get_json()
    assert flow["status"] == "draft" and flow["steps"][0]["delaySeconds"] == HOUR
    assert flow["steps"][0]["config"]["subject"] == REMINDER["subject"]
    url = f"/api/v1/flows/{flow['id']}"
    assert [f["id"] for f in client.get("/api/v1/flows", headers=headers).get_json()] == [flow["id"]]
    # The flow's own campaign is not a campaign the merchant manages.
    assert client.get("/api/v1/campaigns", headers=headers).get_json() == []
    assert client.post(url + "/pause", headers=headers).status_code == 409
    # Email steps send only from a verified sender.
    refused = client.post(url + "/activate", headers=headers)
    assert refused.status_code == 422 and "fromEmail" in refused.get_json()["errors"]["steps"]["0"]["config"]
    assert client.get(url, headers=headers).get_json()["status"] == "draft"
    verified_sender(user.id)
    assert client.post(url + "/activate", headers=headers).get_json()["status"] == "running"
    assert client.post(url + "/activate", headers=headers).status_code == 409
    assert client.patch(url, json={"steps": ABANDONED["steps"]}, headers=headers).status_code == 409
    assert client.patch(url, json={"name": "Cart reminder"}, headers=headers).get_json()["name"] == "Cart reminder"
    assert client.delete(url, headers=headers).status_code == 409
    assert client.post(url + "/pause", headers=headers).get_json()["status"] == "paused"
    assert client.post(url + "/resume", headers=headers).get_json()["status"] == "running"
    assert client.post(url + "/stop", headers=headers).get_json()["status"] == "completed"
    assert client.post(url + "/resume", headers=headers).status_code == 409
    stats = client.get(url + "/stats", headers=headers).get_json()
    assert (stats["entered"], stats["steps"][0]["channel"]["sentCount"]) == (0, 0)
    assert client.get(url + "/enrollments", headers=headers).get_json() == []
    _, stranger = signed_in(client)
    assert client.get(url, headers=stranger).status_code == 404
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404


@pytest.mark.parametrize(("change", "path"), [
    ({"trigger": {"event": "checkout_begun"}}, "trigger.event"),
    ({"trigger": {"event": "checkout_started", "where": {"value": {"over": 3}}}}, "trigger.where.value.over"),
    ({"filter": {"match": "all", "conditions": [{"type": "nope"}]}}, "filter.conditions[0].type"),
    ({"exitWhen": [{"event": "order_placed", "color": "red"}]}, "exitWhen[0].color"),
    ({"reentry": {"mode": "afterDays"}}, "reentry.days"),
    ({"reentry": {"mode": "sometimes"}}, "reentry.mode"),
    ({"steps": []}, "steps"),
    ({"steps": [{"delaySeconds": -1, "channelType": "email", "config": REMINDER}]}, "steps[0].delaySeconds"),
    ({"steps": [{"delaySeconds": 0, "channelType": "fax", "config": {}}]}, "steps[0].channelType"),
    ({"steps": [{"delaySeconds": 0, "channelType": "email", "config": {**REMINDER, "subject": ""}}]},
     "steps[0].config.subject"),
    ({"steps": [ABANDONED["steps"][0], {"delaySeconds": 0, "channelType": "sms", "config": {}}]},
     "steps[1].config.body"),
])
def test_bad_definitions_answer_422_with_the_path_and_store_nothing(client, change, path):
    _, headers = signed_in(client)
    answer = client.post("/api/v1/flows", json={**ABANDONED, **change}, headers=headers)
    assert answer.status_code == 422, answer.get_json()
    assert path in answer.get_json()["errors"], answer.get_json()
    assert client.get("/api/v1/flows", headers=headers).get_json() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


# --- Processes ---------------------------------------------------------------------------------------

# Holds whoever moves enrolments on inside that UPDATE, until the test lets go of its advisory lock.
_HOLD = """
CREATE FUNCTION hold_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_lock(4343); PERFORM pg_advisory_unlock(4343); RETURN NEW; END $$;
CREATE TRIGGER hold_step BEFORE UPDATE OF step ON flow_enrollments FOR EACH ROW EXECUTE FUNCTION hold_step();
"""
_RELEASE = "DROP TRIGGER IF EXISTS hold_step ON flow_enrollments; DROP FUNCTION IF EXISTS hold_step();"
PEOPLE = 20


@pytest.mark.slow
def test_two_beats_and_a_worker_killed_mid_step_send_each_step_once(ctx, shop, smtp_sink, tmp_path):
    import signal

    from tests.support import processes

    user, source = shop
    flow = _running(user)
    _process(source, *[_checkout(f"p{i}@example.com") for i in range(PEOPLE)])
    celery = ctx.extensions["celery"]
    holder = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        holder.exec_driver_sql(_HOLD)
        holder.exec_driver_sql("SELECT pg_advisory_lock(4343)")
        clock.advance(timedelta(hours=1, seconds=1))
        with processes.worker(celery) as worker, \
                processes.beat(tmp_path / "beat-1"), processes.beat(tmp_path / "beat-2"):
            # The worker dispatching the step has written its ledger rows and is held moving the
            # enrolments on, in the same transaction; it is SIGKILLed there.
            processes.wait_until(lambda: _held(holder), timeout=60, what="a worker dispatching the step")
            processes.kill_group(worker, signal.SIGKILL)
            holder.exec_driver_sql("SELECT pg_advisory_unlock(4343)")
            holder.exec_driver_sql(_RELEASE)
            with processes.worker(celery):
                processes.wait_until(lambda: len(smtp_sink.messages) >= PEOPLE, timeout=90, what="every reminder")
                processes.wait_until(lambda: all(e.status == "completed" for e in _enrollments(flow)), timeout=30,
                                     what="every enrolment to complete")
    finally:
        holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        holder.exec_driver_sql(_RELEASE)
        holder.close()
    recipients = sorted(r for m in smtp_sink.messages for r in m.recipients)
    assert recipients == sorted(f"p{i}@example.com" for i in range(PEOPLE))
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == PEOPLE


def _held(connection) -> bool:
    return bool(connection.exec_driver_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query LIKE '%%UPDATE flow_enrollments%%'"
    ).scalar())


def test_metrics_show_the_due_steps_until_beat_dispatches_them(ctx, shop):
    from tests.test_metrics import scrape, value

    user, source = shop
    flow = _running(user, {**ABANDONED, "steps": [{"delaySeconds": 0, "channelType": "email", "config": REMINDER}]})
    _process(source, _checkout("jon@example.com"), _checkout("ann@example.com"))
    due = scrape(ctx.test_client())
    assert value(due, "herald_flow_steps_due") == 2
    assert value(due, "herald_flow_steps_oldest_due_age_seconds") >= 0
    flows.pause(user.id, flow.id)
    assert value(scrape(ctx.test_client()), "herald_flow_steps_due") == 0  # a paused flow's steps wait
    flows.resume(user.id, flow.id)
    flows.dispatch_all_due()
    assert value(scrape(ctx.test_client()), "herald_flow_steps_due") == 0


def test_enrolments_and_flow_messages_write_their_webhook_events(ctx, shop, smtp_sink):
    from app.models import WebhookEvent
    from app.services import webhooks

    user, source = shop
    webhooks.create_endpoint(user.id, "https://hooks.merchant.example/herald", ["flow.enrolled", "message.sent"])
    flow = _running(user, {**ABANDONED, "steps": [{"delaySeconds": 0, "channelType": "email", "config": REMINDER}]})
    _process(source, _checkout("jon@example.com"))
    _tick()
    assert len(smtp_sink.wait_for(1)) == 1
    db.session.expire_all()
    events = {e.type: e.data for e in db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.user_id == user.id))}
    (enrolled,) = _enrollments(flow)
    assert events["flow.enrolled"]["flowId"] == str(flow.id)
    assert (events["flow.enrolled"]["enrollmentId"], events["flow.enrolled"]["contactId"]) == (
        str(enrolled.id), str(enrolled.contact_id))
    assert (events["message.sent"]["flowId"], events["message.sent"]["enrollmentId"]) == (str(flow.id), str(enrolled.id))
