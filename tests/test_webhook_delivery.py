"""Webhook delivery to a real HTTP receiver on 127.0.0.1: every event arrives signed, with an id
that stays the same through retries and replays; a failing endpoint is retried with backoff (the
test moves the clock instead of waiting), disabled after failing for 72 hours, enabled again and
replayed; a worker killed mid-request loses nothing; one merchant's events never reach another's
endpoint."""
from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import uuid
from collections import Counter
from datetime import timedelta

import sqlalchemy as sa

from app import clock
from app import task_names as tasks
from app.extensions import db
from app.models import Contact, Delivery, User, WebhookDelivery, WebhookEvent
from app.security.link_tokens import LinkPurpose, link_signer
from app.services import campaign_lifecycle as lifecycle
from app.services import webhook_delivery, webhook_events
from app.services.transactions import transaction
from tests.emulators.http_server import RecordedRequest
from tests.emulators.webhook_receiver import WebhookReceiver
from tests.support import processes
from tests.support.accounts import signed_in
from tests.support.campaigns import add_contacts, email_campaign, verified_sender

ENDPOINTS = "/api/v1/webhook-endpoints"
WEBHOOK_QUEUES = "campaigns,sends,webhooks,default"


def signed_by(secret: str, request: RecordedRequest) -> bool:
    """The receiver's check, as the README shows it: HMAC-SHA256 of `timestamp.body`, a recent timestamp."""
    timestamp = request.header("Herald-Timestamp") or "0"
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request.header("Herald-Signature") or "") and abs(time.time() - int(timestamp)) < 300


def _merchant(client, receiver: WebhookReceiver, types: list[str] | None = None) -> tuple[uuid.UUID, dict, dict]:
    """A verified merchant with an endpoint at `receiver`: (user id, auth headers, the endpoint as created)."""
    tokens, headers = signed_in(client)
    user_id = uuid.UUID(tokens["user"]["id"])
    db.session.execute(sa.update(User).where(User.id == user_id).values(is_verified=True))
    verified_sender(user_id)
    db.session.commit()
    body = {"url": f"{receiver.base_url}/hooks/herald", "eventTypes": types or ["message.sent", "message.delivered",
            "message.opened", "contact.unsubscribed", "campaign.completed"]}
    created = client.post(ENDPOINTS, json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return user_id, headers, created.get_json()


def _event_ids(user_id: uuid.UUID) -> set[str]:
    db.session.expire_all()
    return {str(i) for i in db.session.scalars(sa.select(WebhookEvent.id).where(WebhookEvent.user_id == user_id))}


def _log(client, headers: dict, endpoint_id: str) -> list[dict]:
    response = client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries?page_size=100", headers=headers)
    assert response.status_code == 200
    return response.get_json()


def test_an_endpoint_failing_twice_then_succeeding_receives_every_event_signed(app, live_client, smtp_sink):
    celery_app = app.extensions["celery"]
    with WebhookReceiver() as mine, WebhookReceiver() as theirs, app.app_context():
        me, my_headers, my_endpoint = _merchant(live_client, mine)
        them, _, their_endpoint = _merchant(live_client, theirs)
        my_contacts = [c.id for c in add_contacts(db.session.get_one(User, me), 3, prefix="mine")]
        their_contacts = [c.id for c in add_contacts(db.session.get_one(User, them), 2, prefix="theirs")]
        my_campaign = email_campaign(db.session.get_one(User, me))[0].id
        their_campaign = email_campaign(db.session.get_one(User, them))[0].id
        campaigns = {my_campaign: me, their_campaign: them}
        mine.fail_next(2, 500)
        # Retries are looked at every second, so a moved clock is noticed at once.
        with processes.worker(celery_app, queues=WEBHOOK_QUEUES, WEBHOOK_WAKE_SECONDS="1"):
            for campaign_id, user_id in campaigns.items():
                lifecycle.launch_now(user_id, campaign_id)
            for campaign_id in campaigns:
                processes.wait_until(lambda c=campaign_id: processes.campaign_status(app, c) == "completed",
                                     timeout=60, what="the campaigns to complete")
            # An open, and an unsubscribe the merchant relays, after the sends.
            opened = db.session.scalar(sa.select(Delivery.id).where(Delivery.contact_id == my_contacts[0]))
            assert live_client.get(f"/t/o/{link_signer().sign(LinkPurpose.OPEN, opened)}").status_code == 200
            assert live_client.post(f"/api/v1/contacts/{my_contacts[1]}/unsubscribe", json={"channels": ["email"]},
                                    headers=my_headers).status_code == 200
            processes.wait_until(lambda: len(mine.faults_answered) == 2, timeout=30, what="the two failures")
            # Recorded too, with their retries' times, before the clock moves: a failure recorded
            # after it would be retried 30 s after the moved time, a real half-minute later.
            processes.wait_until(lambda: _failed_attempts(my_endpoint["id"]) == 2, timeout=30,
                                 what="the two failures to be recorded")
            clock.advance(timedelta(minutes=5))  # the retries fall due (first retry: 30 s)
            mine_expected = 3 + 3 + 1 + 1 + 1  # sent and delivered each, completed, opened, unsubscribed
            processes.wait_until(lambda: len(mine.answered_ok()) >= mine_expected, timeout=60, what="my events")
            processes.wait_until(lambda: len(theirs.answered_ok()) >= 2 + 2 + 1, timeout=60, what="their events")
            time.sleep(1)  # nothing more comes
        db.session.remove()

        # Every event of mine arrived once with a 2xx, each verifiably signed, its id in header and body.
        my_ids = _event_ids(me)
        ok_ids = [e["id"] for e in mine.events(mine.answered_ok())]
        assert len(my_ids) == mine_expected and sorted(ok_ids) == sorted(my_ids)
        secrets = {mine: my_endpoint["secret"], theirs: their_endpoint["secret"]}
        for receiver, secret in secrets.items():
            for request in receiver.requests:
                body = json.loads(request.body)
                assert signed_by(secret, request), request.headers
                assert request.header("Herald-Event-Id") == body["id"]
                assert request.header("Herald-Event-Type") == body["type"]
                assert request.header("Content-Type") == "application/json"
        assert Counter(e["type"] for e in mine.events(mine.answered_ok())) == {
            "message.sent": 3, "message.delivered": 3, "campaign.completed": 1, "message.opened": 1,
            "contact.unsubscribed": 1}

        # The two that failed came again later, with the same id and the very same body.
        first_bodies = {json.loads(r.body)["id"]: r.body for r, _ in mine.faults_answered}
        assert len(first_bodies) == 2
        for request in mine.answered_ok():
            event_id = json.loads(request.body)["id"]
            if event_id in first_bodies:
                assert request.body == first_bodies[event_id]

        # Each merchant heard only of their own campaign and contacts.
        for receiver, campaign_id, people in ((mine, my_campaign, my_contacts), (theirs, their_campaign, their_contacts)):
            for event in receiver.events():
                assert event["data"].get("campaignId") in (None, str(campaign_id))
                assert event["data"].get("contactId") in (None, *map(str, people))
        assert sorted(e["id"] for e in theirs.events()) == sorted(_event_ids(them))

        # The delivery log shows it: every delivery succeeded, the two that failed after 2 attempts.
        log = _log(live_client, my_headers, my_endpoint["id"])
        assert len(log) == mine_expected and {d["status"] for d in log} == {"succeeded"}
        assert sorted(d["attempts"] for d in log) == [1] * (mine_expected - 2) + [2, 2]
        retried = [d for d in log if d["attempts"] == 2]
        assert {d["event"]["id"] for d in retried} == set(first_bodies)
        assert all(d["responseStatus"] == 200 and d["nextAttemptAt"] is None and d["error"] is None for d in retried)
        endpoint = live_client.get(f"{ENDPOINTS}/{my_endpoint['id']}", headers=my_headers).get_json()
        assert (endpoint["enabled"], endpoint["consecutiveFailures"], endpoint["failingSince"]) == (True, 0, None)


def test_a_worker_killed_mid_delivery_loses_no_event(app, live_client):
    celery_app = app.extensions["celery"]
    with WebhookReceiver() as receiver, app.app_context():
        user_id, headers, endpoint = _merchant(live_client, receiver, ["flow.enrolled"])
        receiver.hold_next()
        short = {"WEBHOOK_TIMEOUT_SECONDS": "2"}  # a claim's lease: 2 × 2 + 5 s
        with processes.worker(celery_app, queues="webhooks", **short) as doomed:
            with transaction():
                for step in range(5):
                    webhook_events.emit(user_id, "flow.enrolled", {"flowId": "welcome", "step": step})
            assert receiver.holding.wait(timeout=30), "no request arrived"
            processes.kill_group(doomed, signal.SIGKILL)  # the worker and its pool, mid-request
        receiver.release()
        expected = _event_ids(user_id)
        with processes.worker(celery_app, queues="webhooks", **short):
            celery_app.send_task(tasks.DELIVER_WEBHOOKS)  # what beat's sweep does
            processes.wait_until(lambda: {e["id"] for e in receiver.events(receiver.answered_ok())} == expected
                                 and _succeeded(endpoint["id"]) == 5, timeout=60, what="every event delivered")
        db.session.remove()
    # Every event arrived, each always with the same body; the request the worker died in was made
    # again (at least once). The SIGKILL may have come before that request's body was sent.
    bodies: dict[str, set[bytes]] = {}
    for request in (r for r in receiver.requests if r.body):
        bodies.setdefault(json.loads(request.body)["id"], set()).add(request.body)
        assert signed_by(endpoint["secret"], request)
    assert set(bodies) == expected and all(len(b) == 1 for b in bodies.values())
    assert len(receiver.requests) > len(expected)


def _failed_attempts(endpoint_id: str) -> int:
    """Deliveries to the endpoint whose failed attempt is recorded, waiting for their next one."""
    return _deliveries(endpoint_id, WebhookDelivery.status == "pending", WebhookDelivery.response_status == 500)


def _succeeded(endpoint_id: str) -> int:
    return _deliveries(endpoint_id, WebhookDelivery.status == "succeeded")


def _deliveries(endpoint_id: str, *criteria: sa.ColumnElement[bool]) -> int:
    """The endpoint's deliveries that meet `criteria`, as committed now."""
    db.session.expire_all()
    count = db.session.scalar(sa.select(sa.func.count()).where(
        WebhookDelivery.endpoint_id == uuid.UUID(endpoint_id), *criteria))
    db.session.rollback()
    return count or 0


def test_an_endpoint_failing_for_72_hours_is_disabled_then_enabled_again_and_replayed(app, live_client):
    with WebhookReceiver() as receiver, app.app_context():
        user_id, headers, endpoint = _merchant(live_client, receiver, ["flow.enrolled", "contact.unsubscribed"])
        receiver.fail_next(1000, 503)
        with transaction():
            webhook_events.emit(user_id, "flow.enrolled", {"flowId": "welcome"})
        path = f"{ENDPOINTS}/{endpoint['id']}"
        hours = 0
        while live_client.get(path, headers=headers).get_json()["enabled"] and hours <= 96:
            webhook_delivery.deliver_due(time_budget=5)
            clock.advance(timedelta(hours=6))  # the retries' backoff has grown past this long before
            hours += 6
        failed = live_client.get(path, headers=headers).get_json()
        assert failed["enabled"] is False and hours == 78  # 13 attempts: at 0, 6, ..., 72 hours
        assert "failed for 72 hours (13 attempts in a row)" in failed["disabledReason"]
        assert "503" in failed["disabledReason"]
        assert len(receiver.requests) == 13 and len({r.body for r in receiver.requests}) == 1
        (delivery,) = _log(live_client, headers, endpoint["id"])
        assert (delivery["status"], delivery["attempts"], delivery["responseStatus"]) == ("failed", 13, 503)
        assert "Not retried" in delivery["error"] and delivery["nextAttemptAt"] is None

        # Disabled: nothing new is written for it, and a replay waits for it to be enabled.
        contact = Contact(user_id=user_id, email="gone@example.com", attributes={}, external_ids={},
                          consent={"email": "subscribed"}, consent_sources={})
        db.session.add(contact)
        db.session.commit()
        live_client.post(f"/api/v1/contacts/{contact.id}/unsubscribe", json={}, headers=headers)
        assert len(_event_ids(user_id)) == 1
        replay = f"{path}/deliveries/{delivery['id']}/replay"
        assert live_client.post(replay, headers=headers).status_code == 409

        # Enabled again (its failure record cleared) and replayed: the same event, the same id.
        enabled = live_client.patch(path, json={"enabled": True}, headers=headers).get_json()
        assert (enabled["enabled"], enabled["failingSince"], enabled["consecutiveFailures"]) == (True, None, 0)
        receiver.clear_faults()
        replayed = live_client.post(replay, headers=headers)
        assert replayed.status_code == 202, replayed.get_json()
        assert replayed.get_json()["replayOf"] == delivery["id"]
        assert replayed.get_json()["event"]["id"] == delivery["event"]["id"]
        webhook_delivery.deliver_due(time_budget=5)
        last = receiver.requests[-1]
        assert last.body == receiver.requests[0].body and signed_by(endpoint["secret"], last)
        log = _log(live_client, headers, endpoint["id"])
        assert [(d["status"], d["replayOf"]) for d in log] == [("succeeded", delivery["id"]), ("failed", None)]
        db.session.remove()
