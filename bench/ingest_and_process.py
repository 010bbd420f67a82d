"""Ingestion and processing throughput, each beside its raw ceiling, in one run.

(a) events/s accepted by POST /ingest/facebook-pixel (batches of 500, gunicorn as in the Procfile)
    beside a raw COPY of the same rows into data_events (same batches, one connection), the two in
    turn for five rounds of 10,000 events (medians: a run takes a fraction of a second);
(b) events/s processed by events.process_pending on a real worker (2 processes, warmed by the
    events (a) ingested, which also make their people known, as a running deployment's workers and
    contacts are) beside a raw claim loop over the same number of rows, the two in turn for five
    rounds of 40,000 events (medians): `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING` the claimed rows, one connection, nothing done with them. The claim loop times
    itself; processing's end is seen by polling every 10 ms, a small share of a two-second run.
Aims: >= 0.5 each.
"""
from __future__ import annotations

import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
import sqlalchemy as sa

from bench.harness import bench_app, celery_worker, prepare_database, web_server

BATCHES = 20
BATCH = 500
PEOPLE = 1000
CLIENTS = 4
ROUNDS = 5  # of the claim loop and processing, in turn (a noisy machine: medians)
# A processing run is RUN × BATCHES batches, 40,000 events, about two seconds: this machine's speed
# wanders from second to second, and a longer run averages more of it.
RUN = 4
# The bare claim: take a batch, stamp it, and read what was claimed (as any consumer must).
RAW_CLAIM = sa.text(
    """UPDATE data_events SET "processedAt" = now() WHERE id IN (
         SELECT id FROM data_events WHERE "processedAt" IS NULL ORDER BY "createdAt" LIMIT :n FOR UPDATE SKIP LOCKED)
       RETURNING id, "dataSourceId", "eventType", "eventData"
    """
)


def make_batches(tag: str) -> list[list[dict]]:
    from app.sources.normalize import sha256_email

    now = int(time.time())
    names = ["PageView", "ViewContent", "AddToCart", "InitiateCheckout", "Purchase"]
    return [
        [
            {"event_name": names[i % 5], "event_time": now - 60, "event_id": f"{tag}-{b}-{i}",
             "action_source": "website",
             "user_data": {"em": [sha256_email(f"person{(b * BATCH + i) % PEOPLE}@example.com")],
                           "external_id": [f"ext-{(b * BATCH + i) % PEOPLE}"], "client_ip_address": "203.0.113.9"},
             "custom_data": {"value": 10 + i % 90, "currency": "USD", "content_ids": [f"sku-{i % 50}"]}}
            for i in range(BATCH)
        ]
        for b in range(BATCHES)
    ]


def setup_source(app):
    from app.extensions import db
    from app.models import User
    from tests.support.sources import make_source

    with app.app_context():
        user = User(email="bench@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        source, key = make_source(user, "facebook_pixel")
        return source.id, key


def raw_copy(app, source_id, batches) -> float:
    from app.extensions import db

    with app.app_context():
        raw = db.engine.raw_connection()
        started = time.perf_counter()
        with raw.cursor() as cur:
            for batch in batches:
                buffer = io.StringIO()
                for event in batch:
                    line = json.dumps(event).replace("\\", "\\\\")
                    buffer.write(f"{source_id}\t{event['event_name']}\t{line}\n")
                buffer.seek(0)
                cur.copy_expert('COPY data_events ("dataSourceId", "eventType", "eventData") FROM STDIN', buffer)
                raw.commit()
        elapsed = time.perf_counter() - started
        raw.close()
    return len(batches) * BATCH / elapsed


def set_aside(app, tag: str | None = None) -> None:
    """Stamp the pending events (only those of batches made with `tag`, if given) processed,
    unprocessed: they are not part of what is measured next."""
    from app.extensions import db
    from app.models import DataEvent

    pending = DataEvent.processed_at.is_(None)
    if tag is not None:
        pending &= DataEvent.event_data["event_id"].astext.startswith(tag, autoescape=True)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.update(DataEvent).where(pending).values({DataEvent.processed_at: sa.func.now()}))


def raw_claim_loop(app) -> float:
    from app.extensions import db

    with app.app_context():
        started, claimed = time.perf_counter(), 0
        while True:
            with db.engine.begin() as conn:
                n = len(conn.execute(RAW_CLAIM, {"n": BATCH}).all())
            claimed += n
            if n == 0:
                return claimed / (time.perf_counter() - started)


def http_ingest(base, source_id, key, batches) -> float:
    bodies = [json.dumps({"data": batch}).encode() for batch in batches]
    headers = {"X-Ingest-Key": key, "Content-Type": "application/json"}
    queue = list(bodies)
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                response = session.post(f"{base}/ingest/facebook-pixel/{source_id}", data=body, headers=headers)
                assert response.status_code == 202 and response.json()["duplicates"] == 0, response.text

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(bodies) * BATCH / (time.perf_counter() - started)


def copy_run(app, source_id, tag: str) -> int:
    """A measured run's events, RUN × BATCHES batches copied in (the tables vacuumed after); how many."""
    for part in range(RUN):
        raw_copy(app, source_id, make_batches(f"{tag}-{part}"))
    vacuum(app)
    return RUN * BATCHES * BATCH


def worker_processing(app, source_id) -> tuple[list[float], list[float], int]:
    """Rounds of the claim loop then process_pending on a warmed worker, each over a fresh copy of
    the same kind of run (the tables vacuumed first): their rates; and the activity rows written."""
    from app.extensions import db
    from app.models import ContactActivity

    celery = app.extensions["celery"]
    claims, rates = [], []
    with app.app_context(), celery_worker(celery, "events", concurrency=2):
        drain(app, celery)  # the warm-up: what (a) ingested
        for round_ in range(ROUNDS):
            copy_run(app, source_id, f"claim-{round_}")
            claims.append(raw_claim_loop(app))
            events = copy_run(app, source_id, f"process-{round_}")
            rates.append(events / drain(app, celery))
        activities = db.session.scalar(sa.select(sa.func.count()).select_from(ContactActivity))
    return claims, rates, activities


def drain(app, celery) -> float:
    """Process what is pending on the running worker; the seconds until nothing is (to within the
    10 ms between polls)."""
    from app.extensions import db
    from app.models import DataEvent

    # EXISTS, not count(*): the poll must not take from the database what it measures.
    pending = sa.select(sa.exists().where(DataEvent.processed_at.is_(None)))
    with app.app_context(), db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started = time.perf_counter()
        for _ in range(2):  # one per worker process; each drains batches until the queue is empty
            celery.send_task("events.process_pending")
        while conn.scalar(pending):
            time.sleep(0.01)
        return time.perf_counter() - started


def vacuum(app) -> None:
    """What autovacuum does in a deployment (it is off on the CI machine's PostgreSQL), before each
    measured run as pgbench does: otherwise every run inherits the dead rows of the ones before it
    and the figures drift down run after run."""
    from app.extensions import db

    with app.app_context(), db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) data_events, contact_activities, contacts, contact_identities, "
                             "flow_enrollments"))


def main() -> None:
    prepare_database()
    app = bench_app()
    source_id, key = setup_source(app)
    copies, ingests = [], []
    with web_server() as base:
        http_ingest(base, source_id, key, make_batches("warm")[:8])  # warm-up: every worker has served a few
        set_aside(app)
        for round_ in range(ROUNDS):
            copies.append(raw_copy(app, source_id, make_batches(f"copy-{round_}")))
            set_aside(app, f"copy-{round_}-")  # copied only to be timed
            ingests.append(http_ingest(base, source_id, key, make_batches(f"http-{round_}")))
    claims, rates, activities = worker_processing(app, source_id)
    assert activities == ROUNDS * BATCHES * BATCH + ROUNDS * RUN * BATCHES * BATCH, activities
    copy_rate, ingest_rate = statistics.median(copies), statistics.median(ingests)
    claim_rate, process_rate = statistics.median(claims), statistics.median(rates)
    print(f"(a) ingest through HTTP:  {ingest_rate:9.0f} events/s   raw COPY: {copy_rate:9.0f} events/s"
          f"   ratio {ingest_rate / copy_rate:.2f} (aim >= 0.5; medians of {ROUNDS} rounds: "
          f"{', '.join(f'{r:.0f}' for r in ingests)} and {', '.join(f'{r:.0f}' for r in copies)})")
    print(f"(b) process_pending:      {process_rate:9.0f} events/s   raw claim loop: {claim_rate:9.0f} events/s"
          f"   ratio {process_rate / claim_rate:.2f} (aim >= 0.5; medians of {ROUNDS} rounds: "
          f"{', '.join(f'{r:.0f}' for r in rates)} and {', '.join(f'{r:.0f}' for r in claims)})")


if __name__ == "__main__":
    main()
