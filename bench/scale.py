"""A big merchant: 1,000,000 contacts (set-based fill), 30 % with a checkout in the last week and a
tenth of those with an order, every contact with a few product views. Then, in one run:

- audience preview time for each documented audience shape (through the API), aim < 1 s;
- `POST /campaigns/{id}/launch` response time, aim < 1 s, and the ledger written by a worker, in
  rows/s beside the bare `INSERT ... SELECT` of the same rows into the same table (the ceiling),
  aim >= 0.8 of it and >= 100k rows/s;
- campaign stats and a deliveries page on that ledger, aim < 1 s each.

`BENCH_CONTACTS` changes the size (default 1,000,000).
"""
from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from bench.harness import bench_app, prepare_database

CONTACTS = int(os.environ.get("BENCH_CONTACTS", "1000000"))
SHAPES = {
    "abandoned checkout (7 d, no order)": {"match": "all", "conditions": [
        {"type": "event", "event": "checkout_started", "withinDays": 7},
        {"type": "event", "event": "order_placed", "withinDays": 7, "negate": True},
        {"type": "consent", "channel": "email"}]},
    "country attribute": {"conditions": [{"type": "attribute", "field": "country", "op": "eq", "value": "US"}]},
    "viewed 3+ times in 30 d": {"conditions": [{"type": "event", "event": "product_viewed", "withinDays": 30,
                                                "minCount": 3}]},
    "order over 100 (where)": {"conditions": [{"type": "event", "event": "order_placed",
                                               "where": {"value": {"gt": 100}}}]},
    "any of (group)": {"match": "any", "conditions": [
        {"type": "attribute", "field": "country", "op": "in", "value": ["CA", "GB"]},
        {"type": "group", "match": "all", "conditions": [
            {"type": "event", "event": "checkout_started", "withinDays": 7},
            {"type": "consent", "channel": "sms"}]}]},
    "everyone": {"conditions": []},
}

_CONTACTS = sa.text("""
    INSERT INTO contacts ("userId", email, phone, "firstName", attributes, consent, "createdAt")
    SELECT CAST(:user_id AS uuid), 'c' || g || '@example.com', '+1415' || lpad(g::text, 7, '0'), 'N' || g,
           jsonb_build_object('country', (ARRAY['US', 'CA', 'GB', 'DE', 'FR'])[1 + g % 5], 'orders', g % 7),
           jsonb_build_object('email', 'subscribed', 'sms', CASE WHEN g % 2 = 0 THEN 'subscribed' ELSE 'unsubscribed' END),
           now() - make_interval(mins => g % 100000)
    FROM generate_series(1, :n) AS g
""")
# Per contact: 1-4 product views in the last 30 days; 30 % a checkout in the last 7 days; a tenth of
# those an order (with a value) after it.
_ACTIVITY = sa.text("""
    INSERT INTO contact_activities ("userId", "contactId", "eventType", "originalName", "occurredAt", properties)
    SELECT c."userId", c.id, a.type, a.type, a.at, a.props
    FROM (SELECT id, "userId", row_number() OVER () AS n FROM contacts WHERE "userId" = CAST(:user_id AS uuid)) AS c
    CROSS JOIN LATERAL (
        SELECT 'product_viewed' AS type, now() - make_interval(hours => ((c.n * 7 + v) % 720)::int) AS at,
               jsonb_build_object('product_id', (c.n + v) % 500) AS props
        FROM generate_series(1, 1 + (c.n % 4)::int) AS v
        UNION ALL
        SELECT 'checkout_started', now() - make_interval(hours => (c.n % 160)::int), '{}'::jsonb WHERE c.n % 10 < 3
        UNION ALL
        SELECT 'order_placed', now() - make_interval(hours => (c.n % 150)::int),
               jsonb_build_object('value', (c.n % 300)::int) WHERE c.n % 100 < 3
    ) AS a
""")


def fill(app, user_id: str) -> None:
    """The merchant's contacts and activity, set-based, and the sender its campaign sends from."""
    from app.extensions import db
    from tests.support.campaigns import verified_sender

    with app.app_context():
        started = time.perf_counter()
        db.session.execute(sa.text('UPDATE users SET "isVerified" = true WHERE id = CAST(:id AS uuid)'), {"id": user_id})
        verified_sender(uuid.UUID(user_id))
        db.session.execute(_CONTACTS, {"user_id": user_id, "n": CONTACTS})
        db.session.execute(_ACTIVITY, {"user_id": user_id})
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE contacts"))
            conn.execute(sa.text("VACUUM ANALYZE contact_activities"))
        activities = db.session.scalar(sa.text("SELECT count(*) FROM contact_activities"))
        print(f"filled {CONTACTS:,} contacts and {activities:,} activities in {time.perf_counter() - started:.0f} s")


_CEILING = sa.text("""
    WITH channel AS (
        INSERT INTO campaign_channels ("campaignId", "channelType", config, status)
        VALUES (CAST(:campaign AS uuid), 'sms', '{}', 'sent') RETURNING id
    )
    INSERT INTO deliveries ("campaignId", "channelId", "contactId", "channelType", address, status, "skipReason")
    SELECT d."campaignId", channel.id, d."contactId", d."channelType", d.address, d.status, d."skipReason"
    FROM deliveries AS d, channel WHERE d."campaignId" = CAST(:campaign AS uuid)
""")


def launch(app, client, headers) -> None:
    """An email campaign to the abandoned-checkout audience: POST /launch, then the ledger written by
    a worker (on the campaigns queue only, so nothing is sent meanwhile) beside the bare copy."""
    from app.extensions import db
    from bench.harness import celery_worker

    campaign = client.post("/api/v1/campaigns", headers=headers, json={"name": "Big"}).get_json()["id"]
    client.post(f"/api/v1/campaigns/{campaign}/channels", headers=headers, json={"channelType": "email", "config": {
        "fromEmail": "news@shop.com", "subject": "Your cart", "text": "Come back"}})
    client.post(f"/api/v1/campaigns/{campaign}/audiences", headers=headers,
                json={"name": "abandoned", "definition": SHAPES["abandoned checkout (7 d, no order)"]})
    finished = sa.text('SELECT "rowsWritten" FROM ledger_preparations WHERE "campaignId" = CAST(:c AS uuid) '
                       'AND "finishedAt" IS NOT NULL')
    with celery_worker(app.extensions["celery"], "campaigns", concurrency=1):
        started = time.perf_counter()
        answer = client.post(f"/api/v1/campaigns/{campaign}/launch", headers=headers)
        answered = time.perf_counter() - started
        with app.app_context():
            while (rows := db.session.scalar(finished, {"c": campaign})) is None:
                db.session.rollback()
                time.sleep(0.05)
            written = time.perf_counter() - started
    assert answer.status_code == 200, answer.get_json()
    with app.app_context():
        seconds, _ = timed(db.session.execute, _CEILING, {"campaign": campaign})
        db.session.rollback()
    print(f"POST /launch answered in {answered * 1000:.0f} ms (aim < 1 s)")
    print(f"ledger: {rows:,} rows written by the worker in {written:.1f} s = {rows / written:,.0f} rows/s   "
          f"bare INSERT ... SELECT of the same rows: {rows / seconds:,.0f} rows/s   ratio {seconds / written:.2f} "
          f"(aim >= 0.8, and >= 100,000 rows/s)")
    with app.app_context():
        deep = db.session.scalar(sa.text('SELECT id FROM deliveries WHERE "campaignId" = CAST(:c AS uuid) '
                                         'ORDER BY "createdAt" DESC, id DESC OFFSET 100000 LIMIT 1'), {"c": campaign})
    for name, url in (("stats", f"/api/v1/campaigns/{campaign}/stats"),
                      ("deliveries, after row 100,000 (keyset)",
                       f"/api/v1/campaigns/{campaign}/deliveries?page_size=50&after={deep}"),
                      ("deliveries, first page", f"/api/v1/campaigns/{campaign}/deliveries?page_size=50"),
                      ("deliveries, page 2,000", f"/api/v1/campaigns/{campaign}/deliveries?page_size=50&page=2000"),
                      ("contacts, first page", "/api/v1/contacts?page_size=50"),
                      ("contacts, search by email", "/api/v1/contacts?email=c777777@example.com")):
        seconds, response = timed(client.get, url, headers=headers)
        print(f"  {name:<40} {seconds * 1000:7.0f} ms   HTTP {response.status_code} (aim < 1 s)")


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    from tests.support.accounts import signed_in

    prepare_database()
    app = bench_app()
    logging.getLogger("herald.access").setLevel(logging.WARNING)
    client = app.test_client()
    _, headers = signed_in(client)
    fill(app, client.get("/api/v1/users/me", headers=headers).get_json()["id"])
    print("audience previews through POST /api/v1/audiences/preview (aim < 1 s each):")
    for name, definition in SHAPES.items():
        seconds, response = timed(client.post, "/api/v1/audiences/preview", headers=headers,
                                  json={"definition": definition})
        body = response.get_json()
        shown = (f"count {body['count']:>9,}{' (estimated)' if body.get('estimated') else ''}"
                 if response.status_code == 200 else f"HTTP {response.status_code} {body}")
        print(f"  {name:<40} {seconds * 1000:7.0f} ms   {shown}")
    launch(app, client, headers)
    with app.app_context():
        from app.assistant import tools

        user_id = client.get("/api/v1/users/me", headers=headers).get_json()["id"]
        seconds, _ = timed(tools.data_summary, user_id, 30)
        print(f"  {'assistant data summary (30 d)':<40} {seconds * 1000:7.0f} ms   (aim < 1 s)")


if __name__ == "__main__":
    main()
