"""Email campaign throughput: a 5,000-recipient campaign from launch to completion, sent by a real
worker (2 processes) into an aiosmtpd server, beside a bare smtplib loop sending the same 5,000
messages (rendered the same way) over one connection to the same server. Aim: ratio >= 0.8."""
from __future__ import annotations

import smtplib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.harness import (
    BENCH_ENV,
    bench_app,
    celery_worker,
    free_port,
    launch_and_time,
    prepare_database,
)

RECIPIENTS = 5000


def bare_loop(port: int, messages: list) -> float:
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for message in messages:
            client.send_message(message)
    return len(messages) / (time.perf_counter() - started)


def main() -> None:
    from tests.support.campaigns import add_contacts, email_campaign, verified_merchant
    from tests.support.smtp_sink import SmtpSink

    port = free_port()
    BENCH_ENV["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    prepare_database()
    app = bench_app()
    sink = SmtpSink(port=port).start()
    try:
        with app.app_context():
            user = verified_merchant()
            add_contacts(user, RECIPIENTS)
            campaign, channel = email_campaign(user)
            user_id, campaign_id = user.id, campaign.id
        celery = app.extensions["celery"]
        with celery_worker(celery, "campaigns,sends,default", concurrency=2):
            campaign_rate = RECIPIENTS / launch_and_time(app, user_id, campaign_id)
        received = sink.messages
        assert len(received) == RECIPIENTS and len({m.recipients for m in received}) == RECIPIENTS
        sample = [m.message for m in received]
        sink.clear()
        ceiling = bare_loop(port, sample)
    finally:
        sink.stop()
    print(f"campaign launch → completion: {campaign_rate:8.0f} messages/s   bare smtplib loop: {ceiling:8.0f} "
          f"messages/s   ratio {campaign_rate / ceiling:.2f} (aim >= 0.8)")


if __name__ == "__main__":
    main()
