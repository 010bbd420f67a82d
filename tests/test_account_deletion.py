"""DELETE /api/v1/users/me: password confirmed, signed out and locked out at once, campaigns stopped,
and every row of the merchant deleted by a real worker in batches — nobody else's."""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.extensions import db
from app.models import Campaign, Contact, DataEvent, User
from app.services import account_deletion, event_processing, sending, suppressions
from tests.support import processes
from tests.support.accounts import PASSWORD, signed_in
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_sender
from tests.support.sources import make_source, shopify_order


def _merchant(client, app):
    tokens, headers = signed_in(client)
    with app.app_context():
        user = db.session.scalars(sa.select(User).order_by(User.created_at.desc())).first()
        user.is_verified = True
        verified_sender(user.id)
        db.session.commit()
        return user.id, user.email, headers


def _fill(app, user_id) -> uuid.UUID:
    with app.app_context():
        user = db.session.get_one(User, user_id)
        add_contacts(user, 30, prefix=f"{user_id.hex[:6]}-")
        shop, _ = make_source(user, "shopify")
        db.session.add(DataEvent(data_source_id=shop.id, event_type="orders/create",
                                 event_data=shopify_order(email=f"{user_id.hex[:6]}-buyer@example.com")))
        db.session.commit()
        event_processing.process_batch()
        suppressions.add(user_id, "email", f"{user_id.hex[:6]}-gone@example.com", "manual")
        sent, channel = email_campaign(user)
        launch(user_id, sent.id)
        sending.send_channel(channel.id)
        waiting, _ = email_campaign(user)
        waiting_id = waiting.id
        launch(user_id, waiting_id)  # queued, never sent: the deletion stops it
        db.session.remove()
        return waiting_id


def _rows_of(user_id) -> dict[str, int]:
    """Rows in every table with a userId column, plus the user's contacts' and campaigns' rows."""
    counts = {}
    tables = db.session.execute(sa.text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'userId'"))
    for (table,) in tables:
        count = db.session.scalar(sa.text(f'SELECT count(*) FROM "{table}" WHERE "userId" = :id'), {"id": user_id})
        if count:
            counts[table] = count
    counts["users"] = db.session.scalar(sa.select(sa.func.count(User.id)).where(User.id == user_id)) or 0
    return {table: count for table, count in counts.items() if count}


def test_deleting_an_account_removes_all_of_it_and_nothing_else(app, live_client, smtp_sink):
    gone_id, gone_email, headers = _merchant(live_client, app)
    kept_id, _, kept_headers = _merchant(live_client, app)
    waiting = _fill(app, gone_id)
    _fill(app, kept_id)
    with app.app_context():
        kept_before = _rows_of(kept_id)
        assert {"contacts", "campaigns", "data_sources", "suppressions"} <= _rows_of(gone_id).keys()

    wrong = live_client.delete("/api/v1/users/me", json={"password": "not it"}, headers=headers)
    assert wrong.status_code == 422 and "password" in wrong.get_json()["errors"]
    assert live_client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert live_client.delete("/api/v1/users/me", json={"password": PASSWORD}, headers=headers).status_code == 202
    assert live_client.get("/api/v1/users/me", headers=headers).status_code == 401  # signed out at once
    assert live_client.post("/api/v1/auth/login", json={"email": gone_email, "password": PASSWORD}).status_code == 401
    with app.app_context():
        assert db.session.get_one(Campaign, waiting).status == "completed"  # stopped before the worker runs

    with processes.worker(app.extensions["celery"], queues="default,campaigns,sends"):
        def gone() -> bool:
            with app.app_context():
                done = not _rows_of(gone_id)
                db.session.remove()
            return done
        processes.wait_until(gone, timeout=60, what="the account's rows deleted")
    with app.app_context():
        assert _rows_of(kept_id) == kept_before
        assert db.session.scalar(sa.select(sa.func.count(Contact.id)).where(Contact.user_id == kept_id)) == 30 + 1
    assert live_client.get("/api/v1/users/me", headers=kept_headers).status_code == 200


def test_a_deletion_whose_worker_died_is_taken_up_again(app, committed_db):
    with app.app_context():
        from tests.support.campaigns import verified_merchant
        user = verified_merchant()
        add_contacts(user, 7)
        user_id = user.id
        db.session.execute(sa.text('INSERT INTO account_deletions ("userId", "updatedAt") '
                                   "VALUES (:id, now() - interval '1 hour')"), {"id": user_id})
        db.session.commit()
        assert account_deletion.resume_stalled() == 1
        assert account_deletion.delete_account(user_id, batch_size=3) is True
        assert _rows_of(user_id) == {}
        assert account_deletion.delete_account(user_id) is False  # done: a second run does nothing
