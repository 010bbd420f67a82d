"""The purge job against real rows: expired blacklist entries and long-expired sessions go, nothing else."""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import TokenBlacklist, User, UserSession, utcnow
from app.services.maintenance import purge_expired_tokens


def _seed_rows(now):
    user = User(email="owner@example.com", password_hash="x")
    db.session.add(user)
    db.session.flush()
    for i, delta in enumerate([-5, -1, -1, -1, 1, 30]):  # hours relative to now
        db.session.add(TokenBlacklist(jti=f"jti-{i}", user_id=user.id, expires_at=now + timedelta(hours=delta)))
    for i, days in enumerate([-45, -31, -31, -29, 10]):
        db.session.add(
            UserSession(user_id=user.id, refresh_token_hash=f"h{i}", expires_at=now + timedelta(days=days))
        )
    db.session.commit()
    return user


def test_purge_deletes_only_what_expired(app_ctx):
    now = utcnow()
    _seed_rows(now)
    result = purge_expired_tokens(now=now, batch_size=2)  # several batches
    assert (result.blacklisted_tokens, result.sessions) == (4, 3)
    remaining_tokens = db.session.scalars(sa.select(TokenBlacklist.jti).order_by(TokenBlacklist.jti)).all()
    assert remaining_tokens == ["jti-4", "jti-5"]
    remaining = db.session.scalars(sa.select(UserSession.expires_at)).all()
    assert sorted(r - now for r in remaining) == [timedelta(days=-29), timedelta(days=10)]


def test_purge_on_an_empty_table_is_a_no_op(app_ctx):
    result = purge_expired_tokens()
    assert (result.blacklisted_tokens, result.sessions) == (0, 0)


def test_dedupe_keys_older_than_a_week_are_forgotten(app_ctx):
    from app.models import DataSource, EventDedupeKey
    from app.services.maintenance import purge_dedupe_keys

    now = utcnow()
    user = User(email="keys@example.com", password_hash="x")
    db.session.add(user)
    db.session.flush()
    source = DataSource(user_id=user.id, source_type="gtm", name="s", config={})
    db.session.add(source)
    db.session.flush()
    for key, age in [("old-1", 8), ("old-2", 30), ("fresh", 6)]:
        db.session.add(EventDedupeKey(data_source_id=source.id, dedupe_key=key, created_at=now - timedelta(days=age)))
    db.session.commit()
    assert purge_dedupe_keys(now=now, batch_size=1) == 2
    assert db.session.scalars(sa.select(EventDedupeKey.dedupe_key)).all() == ["fresh"]


def test_retention_deletes_only_old_processed_events_and_keeps_activity(app_ctx):
    from app.models import Contact, ContactActivity, DataEvent, SyncRun
    from app.services.maintenance import apply_retention
    from tests.support.sources import make_merchant, make_source

    now = utcnow()
    user = make_merchant()
    source, _ = make_source(user, "shopify")
    contact = Contact(user_id=user.id, email="eve@example.com", attributes={}, external_ids={}, consent={},
                      consent_sources={})
    db.session.add(contact)
    events = {
        "old processed": DataEvent(data_source_id=source.id, event_type="orders/create", event_data={"id": 1},
                                   processed_at=now - timedelta(days=91)),
        "old waiting": DataEvent(data_source_id=source.id, event_type="orders/create", event_data={"id": 2},
                                 created_at=now - timedelta(days=120)),
        "recent processed": DataEvent(data_source_id=source.id, event_type="orders/create", event_data={"id": 3},
                                      processed_at=now - timedelta(days=89)),
    }
    db.session.add_all(events.values())
    db.session.flush()
    db.session.add(ContactActivity(user_id=user.id, contact_id=contact.id,
                                   data_event_id=events["old processed"].id, event_type="order_placed",
                                   original_name="orders/create", occurred_at=now - timedelta(days=91)))
    runs = [SyncRun(data_source_id=source.id, trigger="schedule", status=status, lease_expires_at=now,
                    finished_at=finished) for status, finished in (("succeeded", now - timedelta(days=31)),
                                                                   ("succeeded", now - timedelta(days=2)),
                                                                   ("running", None))]
    db.session.add_all(runs)
    db.session.commit()
    ids = {name: event.id for name, event in events.items()}

    result = apply_retention(now=now, batch_size=1)
    assert (result.events, result.sync_runs) == (1, 1)
    db.session.expire_all()
    left = set(db.session.scalars(sa.select(DataEvent.id)))
    assert left == {ids["old waiting"], ids["recent processed"]}
    assert db.session.scalar(sa.select(sa.func.count(ContactActivity.id))) == 1  # audiences still see it
    assert db.session.scalar(sa.select(sa.func.count(SyncRun.id))) == 2


def test_retention_deletes_unparsed_bounce_mail_older_than_its_setting(app_ctx):
    from app.models import BounceMail
    from app.services.maintenance import apply_retention

    now = utcnow()
    ages = {"old": 31, "recent": 29}
    db.session.add_all([BounceMail(mail_from="", recipients=["postmaster@bounces.herald.test"], raw=name.encode(),
                                   reason="not a delivery status notification", received_at=now - timedelta(days=days))
                        for name, days in ages.items()])
    db.session.commit()

    result = apply_retention(now=now, batch_size=1)
    assert result.bounce_mail == 1
    db.session.expire_all()
    assert list(db.session.scalars(sa.select(BounceMail.raw))) == [b"recent"]
