"""A/B tests: variants validated, the test group split evenly, the winner chosen once from the ledger
when the test ends (by the clock the services read), the rest of the audience sent the winner, and
nobody getting two variants or one twice — also with two beats and a worker SIGKILLed while it chooses."""
from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import clock
from app.extensions import db
from app.models import AbTest, Campaign, Delivery
from app.services import campaign_lifecycle as lifecycle
from app.services import campaign_stats, sending
from tests.support import processes
from tests.support.accounts import signed_in
from tests.support.campaigns import EMAIL_CONFIG, add_contacts, email_campaign, launch, verified_merchant
from tests.test_email_channel import tracked_links

AUDIENCE = 40
AB_TEST = {"variants": [{"subject": "Version A"}, {"subject": "Version B"}], "testPercent": 50,
           "metric": "unique_clicks", "durationMinutes": 60}


def _subjects(sink) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for mail in sink.messages:
        for rcpt in mail.recipients:
            found.setdefault(rcpt, []).append(mail.message["Subject"])
    return found


def _click_every(sink, subject: str, client) -> int:
    clicked = 0
    for mail in sink.messages:
        if mail.message["Subject"] == subject:
            token = tracked_links(mail.html())["c"][0]
            assert client.get(f"/t/c/{token}").status_code == 302
            clicked += 1
    return clicked


def _tested(campaign_id) -> Counter:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(Delivery.variant).where(Delivery.campaign_id == campaign_id)))


def test_the_winner_goes_to_the_rest_and_nobody_gets_two(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, AUDIENCE)
    campaign, channel = email_campaign(user, {"abTest": AB_TEST})
    launch(user.id, campaign.id)
    variants = _tested(campaign.id)
    test_group = variants[0] + variants[1]
    assert abs(variants[0] - variants[1]) <= 1 and 0 < test_group < AUDIENCE  # split evenly
    assert sending.send_channel(channel.id) == test_group  # the rest waits for the winner
    smtp_sink.wait_for(test_group)
    assert _click_every(smtp_sink, "Version B", ctx.test_client()) == variants[1]
    assert lifecycle.launch_due() == [] and db.session.get_one(AbTest, channel.id).winner is None  # not yet

    clock.advance(timedelta(minutes=61))
    lifecycle.launch_due()
    test = db.session.get_one(AbTest, channel.id)
    assert test.winner == 1 and test.scores == [0.0, 1.0]
    assert sending.send_channel(channel.id) == AUDIENCE - test_group
    smtp_sink.wait_for(AUDIENCE)
    subjects = _subjects(smtp_sink)
    assert all(len(got) == 1 for got in subjects.values()) and len(subjects) == AUDIENCE
    assert Counter(got[0] for got in subjects.values()) == {"Version A": variants[0],
                                                            "Version B": AUDIENCE - variants[0]}
    assert _tested(campaign.id) == {0: variants[0], 1: AUDIENCE - variants[0]}

    db.session.expire_all()
    assert db.session.get_one(Campaign, campaign.id).status == "completed"
    stats = campaign_stats.campaign_stats(user.id, campaign.id).channels[0].ab_test
    assert stats is not None and stats.winner == 1
    a, b = stats.variants
    assert (a.overrides, a.recipients, a.sent_count, a.clicked_count, a.winner) == (
        {"subject": "Version A"}, variants[0], variants[0], 0, False)
    assert (b.recipients, b.sent_count, b.clicked_count, b.winner, b.score) == (
        AUDIENCE - variants[0], AUDIENCE - variants[0], variants[1], True, 1.0)


def test_a_tie_goes_to_the_first_variant(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 10)
    campaign, channel = email_campaign(user, {"abTest": {**AB_TEST, "metric": "unique_opens", "testPercent": 100}})
    launch(user.id, campaign.id)
    assert sending.send_channel(channel.id) == 10
    clock.advance(timedelta(hours=2))
    lifecycle.launch_due()
    assert db.session.get_one(AbTest, channel.id).winner == 0


# Holds whoever records a winner inside the UPDATE, until the test lets go of its advisory lock.
_HOLD = """
CREATE FUNCTION hold_winner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); RETURN NEW; END $$;
CREATE TRIGGER hold_winner BEFORE UPDATE OF winner ON ab_tests FOR EACH ROW EXECUTE FUNCTION hold_winner();
"""
_RELEASE = "DROP TRIGGER IF EXISTS hold_winner ON ab_tests; DROP FUNCTION IF EXISTS hold_winner();"


@pytest.mark.slow
def test_two_beats_and_a_worker_killed_while_choosing_send_each_recipient_once(ctx, smtp_sink, tmp_path):
    user = verified_merchant()
    add_contacts(user, AUDIENCE)
    campaign, channel = email_campaign(user, {"abTest": AB_TEST})
    celery = ctx.extensions["celery"]
    holder = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        with processes.worker(celery) as worker:
            lifecycle.launch_now(user.id, campaign.id)
            processes.wait_until(lambda: sum(n for v, n in _tested(campaign.id).items() if v is not None) > 0,
                                 timeout=30, what="the ledger")
            variants = _tested(campaign.id)
            smtp_sink.wait_for(variants[0] + variants[1], timeout=30)
            _click_every(smtp_sink, "Version B", ctx.test_client())
            # The worker that records the winner is held inside that UPDATE, then SIGKILLed there.
            holder.exec_driver_sql(_HOLD)
            holder.exec_driver_sql("SELECT pg_advisory_lock(4242)")
            clock.advance(timedelta(minutes=61))
            with processes.beat(tmp_path / "beat-1"), processes.beat(tmp_path / "beat-2"):
                processes.wait_until(lambda: _choosing(holder), timeout=60, what="a worker recording the winner")
                processes.kill_group(worker, signal.SIGKILL)
                holder.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
                holder.exec_driver_sql(_RELEASE)
                with processes.worker(celery):
                    processes.wait_until(lambda: len(smtp_sink.messages) >= AUDIENCE, timeout=90, what="the rest")
                    processes.wait_until(lambda: _campaign_status(campaign.id) == "completed", timeout=60,
                                         what="completion")
    finally:
        holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        holder.exec_driver_sql(_RELEASE)
        holder.close()
    subjects = _subjects(smtp_sink)
    assert len(subjects) == AUDIENCE and all(len(got) == 1 for got in subjects.values())
    assert Counter(got[0] for got in subjects.values())["Version B"] == AUDIENCE - variants[0]
    db.session.expire_all()
    assert db.session.get_one(AbTest, channel.id).winner == 1


def _choosing(connection) -> bool:
    waiting = connection.exec_driver_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        " AND query LIKE 'UPDATE ab_tests%%'"
    ).scalar()
    return bool(waiting)


def _campaign_status(campaign_id) -> str:
    db.session.expire_all()
    return db.session.get_one(Campaign, campaign_id).status


def test_variants_are_validated_with_their_paths(client, app_ctx):
    _, headers = signed_in(client)
    cid = client.post("/api/v1/campaigns", json={"name": "Test"}, headers=headers).get_json()["id"]

    def channel(ab_test):
        return client.post(f"/api/v1/campaigns/{cid}/channels", headers=headers,
                           json={"channelType": "email", "config": {**EMAIL_CONFIG, "abTest": ab_test}})

    one = channel({**AB_TEST, "variants": [{"subject": "Only"}]})
    assert one.status_code == 422 and "variants" in one.get_json()["errors"]["config"]["abTest"]
    unknown = channel({**AB_TEST, "variants": [{"subject": "A"}, {"colour": "red"}]})
    assert unknown.status_code == 422
    assert unknown.get_json()["errors"]["config"]["abTest"]["variants"] == {"1": {"colour": [
        "Not a field of this channel's message."]}}
    broken = channel({**AB_TEST, "variants": [{"subject": "A"}, {"subject": "{{ oops"}]})
    assert broken.status_code == 422 and "subject" in broken.get_json()["errors"]["config"]["abTest"]["variants"]["1"]
    metric = channel({**AB_TEST, "metric": "vibes"})
    assert metric.status_code == 422 and "metric" in metric.get_json()["errors"]["config"]["abTest"]
    assert client.get(f"/api/v1/campaigns/{cid}/channels", headers=headers).get_json() == []
    good = channel(AB_TEST)
    assert good.status_code == 201, good.get_json()
    assert good.get_json()["config"]["abTest"]["variants"] == AB_TEST["variants"]


def test_attributed_revenue_picks_the_variant_that_earned_most(ctx, smtp_sink):
    from decimal import Decimal

    from app.models import Attribution

    user = verified_merchant()
    add_contacts(user, 10)
    campaign, channel = email_campaign(user, {"abTest": {**AB_TEST, "metric": "attributed_revenue",
                                                         "testPercent": 100}})
    launch(user.id, campaign.id)
    assert sending.send_channel(channel.id) == 10
    earners = db.session.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign.id, Delivery.variant == 1)
                                 .limit(2)).all()
    for index, delivery in enumerate(earners):  # two orders credited to variant 1's messages
        db.session.add(Attribution(user_id=user.id, order_key=f"order:{index}", contact_id=delivery.contact_id,
                                   delivery_id=delivery.id, campaign_id=campaign.id, channel_id=channel.id,
                                   channel_type="email", touch="click", touched_at=clock.now(),
                                   revenue=Decimal("25.00"), currency="EUR", occurred_at=clock.now()))
    db.session.commit()
    clock.advance(timedelta(hours=2))
    lifecycle.launch_due()
    assert db.session.get_one(AbTest, channel.id).winner == 1
    variants = campaign_stats.campaign_stats(user.id, campaign.id).channels[0].ab_test.variants
    assert [(v.credited.orders, [(m.currency, m.amount) for m in v.credited.amounts]) for v in variants] == [
        (0, []), (2, [("EUR", "50.00")])]
