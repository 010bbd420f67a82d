"""Triggered flows, in one run, each figure beside its ceiling:

(a) events/s processed by events.process_pending on a real worker (2 processes, warmed by a first
    run) with 10 flows (triggers and exits on the batches' event types) paused and running, fifteen
    runs of 40,000 events each, alternating in turn order (ABBA), beside the raw claim loop of
    bench/ingest_and_process.py over the same 40,000 events, run in the same rounds (medians of
    fifteen each: the ceiling is measured on the same database, as it grows, as the figures are).
    Aims: with flows >= 0.8 × without; processing >= 0.5 × the claim loop.
(b) dispatch: 10,000 enrolments due at once on an email step → messages/s from the first dispatch
    to the last message received by an aiosmtpd server, on a real worker (2 processes), beside a bare
    smtplib loop sending the same messages over one connection. Aim: >= 0.8.
"""
from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from bench.campaign_email import bare_loop
from bench.harness import BENCH_ENV, bench_app, celery_worker, free_port, prepare_database
from bench.ingest_and_process import copy_run, drain, raw_claim_loop, setup_source

ENROLLED = 10_000
RUNS = 15  # runs with the flows paused and running, alternating (a noisy machine: medians of fifteen)
EMAIL = {"fromEmail": "news@shop.com", "fromName": "Shop", "subject": "Your cart, {{ contact.firstName }}",
         "html": '<p>Hi {{ contact.firstName }}, <a href="https://shop.test/cart">your cart</a> is waiting.</p>',
         "text": "Hi {{ contact.firstName }}, your cart is waiting: https://shop.test/cart"}
STEP = [{"delaySeconds": 3600, "channelType": "email", "config": EMAIL}]
# Ten flows on the batches' events: abandoned checkout and cart, post-purchase, browse, with exits.
FLOWS = [
    {"trigger": {"event": "checkout_started"}, "exitWhen": [{"event": "order_placed"}], "reentry": {"mode": "once"}},
    {"trigger": {"event": "checkout_started"}, "reentry": {"mode": "always"}},
    {"trigger": {"event": "checkout_started", "where": {"value": {"gte": 50}}}, "reentry": {"mode": "afterDays",
                                                                                           "days": 7}},
    {"trigger": {"event": "added_to_cart"}, "exitWhen": [{"event": "checkout_started"}, {"event": "order_placed"}],
     "reentry": {"mode": "once"}},
    {"trigger": {"event": "added_to_cart"}, "reentry": {"mode": "always"}},
    {"trigger": {"event": "order_placed"}, "reentry": {"mode": "always"}},
    {"trigger": {"event": "order_placed"}, "reentry": {"mode": "once"}},
    {"trigger": {"event": "product_viewed"}, "exitWhen": [{"event": "added_to_cart"}], "reentry": {"mode": "once"}},
    {"trigger": {"event": "product_viewed"}, "reentry": {"mode": "afterDays", "days": 1}},
    {"trigger": {"event": "page_viewed"}, "exitWhen": [{"event": "order_placed"}], "reentry": {"mode": "once"}},
]


def processing(app, celery, events: int) -> float:
    """Events/s through process_pending on the running worker's 2 processes, the events copied in first."""
    return events / drain(app, celery)


def claim_loop(app, source_id, tag: str) -> float:
    """One run of the bare claim loop over as many events as a measured run, copied in the same way."""
    copy_run(app, source_id, tag)
    return raw_claim_loop(app)


def start_flows(app, source_id):
    """The ten flows, running since an hour ago (the batches' events happened a minute ago); the merchant's id."""
    from app.extensions import db
    from app.models import DataSource, Flow, User
    from app.services import flows
    from tests.support.campaigns import verified_sender

    with app.app_context():
        user_id = db.session.get_one(DataSource, source_id).user_id
        db.session.execute(sa.update(User).where(User.id == user_id).values(is_verified=True))
        verified_sender(user_id, EMAIL["fromEmail"])
        db.session.commit()
        for index, definition in enumerate(FLOWS):
            flow = flows.create(user_id, {"name": f"Flow {index}", "steps": STEP, **definition})
            flows.activate(user_id, flow.id)
        db.session.execute(sa.update(Flow).values(activated_at=sa.func.now() - sa.text("interval '1 hour'")))
        db.session.commit()
        return user_id


def set_flows(app, user_id, move: str) -> None:
    """Pause or resume the merchant's flows that are not so already (a paused flow enrols nobody)."""
    from app.extensions import db
    from app.models import Flow
    from app.services import flows

    status = {"pause": "paused", "resume": "running"}[move]
    with app.app_context():
        for flow_id in db.session.scalars(sa.select(Flow.id).where(Flow.user_id == user_id,
                                                                   Flow.status != status)).all():
            getattr(flows, move)(user_id, flow_id)


def enrolments(app) -> int:
    from app.extensions import db

    with app.app_context():
        return db.session.scalar(sa.text("SELECT count(*) FROM flow_enrollments"))


def dispatch(app, port: int) -> tuple[float, list]:
    from app import task_names as tasks
    from app.extensions import db
    from app.services import flows
    from tests.support.campaigns import add_contacts, verified_merchant
    from tests.support.smtp_sink import SmtpSink

    sink = SmtpSink(port=port).start()
    try:
        with app.app_context():
            user = verified_merchant()
            add_contacts(user, ENROLLED, prefix="d")
            flow = flows.create(user.id, {"name": "Reminder", "trigger": {"event": "checkout_started"},
                                          "steps": [{"delaySeconds": 0, "channelType": "email", "config": EMAIL}]})
            flows.activate(user.id, flow.id)
            db.session.execute(sa.text(
                """INSERT INTO flow_enrollments ("flowId", "contactId", "dataEventId", "triggeredAt", "nextDueAt")
                   SELECT :flow, id, uuid_generate_v4(), now() - interval '1 minute', now() - interval '1 minute'
                   FROM contacts WHERE "userId" = :user"""), {"flow": flow.id, "user": user.id})
            db.session.commit()
        celery = app.extensions["celery"]
        with celery_worker(celery, "campaigns,sends,default", concurrency=2):
            started = time.perf_counter()
            celery.send_task(tasks.DISPATCH_FLOW_STEPS)
            sink.wait_for(ENROLLED, timeout=600)
            rate = ENROLLED / (time.perf_counter() - started)
        received = sink.messages
        assert len({m.recipients for m in received}) == ENROLLED == len(received)
        return rate, [m.message for m in received]
    finally:
        sink.stop()


def main() -> None:
    from tests.support.smtp_sink import SmtpSink

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the SMTP server's line per command

    port = free_port()
    BENCH_ENV["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    prepare_database()
    app = bench_app()
    source_id, _ = setup_source(app)
    celery = app.extensions["celery"]
    claims, without, with_flows, enrolled = [], [], [], []
    # One worker for every run, warmed by the first (as a running deployment's workers are). Each
    # round runs the bare claim loop, then the ten flows paused and running, so a drift of the
    # machine, and the database's growth run after run, touch the ceiling and both sides alike.
    with celery_worker(celery, "events", concurrency=2):
        processing(app, celery, copy_run(app, source_id, "warm"))  # the people exist before any run
        user_id = start_flows(app, source_id)
        for round_ in range(RUNS):
            claims.append(claim_loop(app, source_id, f"claim-{round_}"))
            # The pair in turn order (paused first, then running first, ...): neither side always
            # runs on the bigger database.
            for move in ("pause", "resume") if round_ % 2 == 0 else ("resume", "pause"):
                set_flows(app, user_id, move)
                before = enrolments(app)
                rate = processing(app, celery, copy_run(app, source_id, f"{move}-{round_}"))
                if move == "pause":
                    without.append(rate)
                else:
                    with_flows.append(rate)
                    enrolled.append(enrolments(app) - before)
    claim_rate = statistics.median(claims)
    without_rate, with_rate = statistics.median(without), statistics.median(with_flows)
    print(f"(a) raw claim loop: {claim_rate:8.0f} events/s (median of {', '.join(f'{r:.0f}' for r in claims)})")
    print(f"    process_pending, no flows running: {without_rate:8.0f} events/s (median of "
          f"{', '.join(f'{r:.0f}' for r in without)})   ratio to the claim loop {without_rate / claim_rate:.2f} "
          f"(aim >= 0.5)")
    print(f"    process_pending, 10 flows running: {with_rate:8.0f} events/s (median of "
          f"{', '.join(f'{r:.0f}' for r in with_flows)}; enrolments per run {', '.join(map(str, enrolled))})   "
          f"ratio to none running {with_rate / without_rate:.2f} (aim >= 0.8)   to the claim loop "
          f"{with_rate / claim_rate:.2f}")
    if "processing" in sys.argv[1:]:  # `bench/flows.py processing`: part (a) only
        return
    dispatch_rate, sample = dispatch(app, port)
    sink = SmtpSink(port=port).start()
    try:
        ceiling = bare_loop(port, sample)
    finally:
        sink.stop()
    print(f"(b) 10,000 due enrolments → sent: {dispatch_rate:8.0f} messages/s   bare smtplib loop: {ceiling:8.0f} "
          f"messages/s   ratio {dispatch_rate / ceiling:.2f} (aim >= 0.8)")


if __name__ == "__main__":
    main()
