"""What the webhook outbox costs the send engine's settle statement (record 64 outcomes, claim 64
more: app.services.delivery_ledger._SETTLE, as written), timed round trip by round trip, interleaved, each run
rolled back so all see the same rows: (a) the statement without the outbox's CTEs, (b) with them,
for a merchant with no endpoint, (c) with them, for a merchant whose endpoint takes message.sent and
message.delivered (two events and two deliveries written per message). Aim: (b) / (a) >= 0.9."""
from __future__ import annotations

import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import bench_app, prepare_database

BATCH = 64
ROUNDS = 300


def without_outbox(text: str) -> str:
    """The settle statement as it was before the outbox: its text without the webhook CTEs."""
    start = text.index("    webhook_merchant AS MATERIALIZED")
    text = text[:start] + text[text.index("    cleared AS ("):]
    return text.replace("(SELECT count(*) FROM webhook_delivery)", "0").replace(
        "RETURNING d.*", 'RETURNING d.status, d."providerMessageId"')


def channel_with_rows(subscribed: bool) -> tuple[uuid.UUID, list[str]]:
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Delivery
    from app.services import webhooks
    from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant

    user = verified_merchant()
    add_contacts(user, 2 * BATCH)
    campaign, channel = email_campaign(user)
    if subscribed:
        webhooks.create_endpoint(user.id, "https://hooks.example.com/herald", ["message.sent", "message.delivered"])
    launch(user.id, campaign.id)
    ids = [str(i) for i in db.session.scalars(sa.select(Delivery.id).where(Delivery.channel_id == channel.id))]
    return channel.id, ids


def main() -> None:
    import sqlalchemy as sa

    from app import clock
    from app.extensions import db
    from app.services import bulk_sql, delivery_ledger

    prepare_database()
    app = bench_app()
    with app.app_context():
        settle = delivery_ledger._SETTLE.source  # both unprepared: planned alike, every time
        statements = {"bare": sa.text(without_outbox(settle.text)), "outbox": settle}
        channels = {False: channel_with_rows(False), True: channel_with_rows(True)}
        cases = {"without the outbox": ("bare", False), "with it, no endpoint": ("outbox", False),
                 "with it, an endpoint subscribed": ("outbox", True)}
        timings: dict[str, list[float]] = {name: [] for name in cases}
        with db.engine.connect() as conn:
            conn.rollback()
            for round_ in range(ROUNDS + 20):
                for name, (statement, subscribed) in cases.items():
                    channel_id, ids = channels[subscribed]
                    with conn.begin() as transaction:
                        conn.execute(sa.text("UPDATE deliveries SET status = 'sending' WHERE id = ANY(CAST(:ids AS uuid[]))"),
                                     {"ids": ids[:BATCH]})
                        rows = [{"id": i, "status": "delivered", "providerMessageId": f"<{i}@bench>", "error": None,
                                 "retryIn": None} for i in ids[:BATCH]]
                        params = {"rows": bulk_sql.to_json(rows), "channel_id": str(channel_id), "channel_type": "email",
                                  "limit": BATCH, "lease": 60.0, "now": clock.now(), "kind": "email"}
                        started = time.perf_counter()
                        conn.execute(statements[statement], params).all()
                        if round_ >= 20:  # the first rounds warm caches up
                            timings[name].append(time.perf_counter() - started)
                        transaction.rollback()
        db.session.remove()
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    bare = medians["without the outbox"]
    print("   ".join(f"{name}: {ms:.2f} ms ({BATCH / ms * 1000:.0f} messages/s, ratio {bare / ms:.2f})"
                       for name, ms in medians.items()) + f"   (settle of {BATCH} outcomes + claim of {BATCH}, median "
          f"of {ROUNDS}; aim: no endpoint >= 0.9)")


if __name__ == "__main__":
    main()
