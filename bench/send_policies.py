"""What send policies cost: a 20,000-recipient email campaign with a frequency cap and quiet hours
on (every recipient in one of three timezones, each checked against their quiet hours and the cap
as their message is claimed), beside the same campaign with no policies, in one run, both sent by a
real worker (2 processes) into an aiosmtpd server that answers at once (the harshest comparison:
any time the policies take shows in full). Aim: with policies >= 0.8 of without."""
from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BENCH_ENV,
    bench_app,
    celery_worker,
    free_port,
    launch_and_time,
    prepare_database,
)

RECIPIENTS = 20_000
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo")


def quiet_hours_outside_now() -> dict[str, str]:
    """A two-hour quiet window that is not now in any of the zones: it is checked, not waited for."""
    now = datetime.now(UTC)
    local_hours = {now.astimezone(ZoneInfo(zone)).hour for zone in ZONES}
    for start in range(24):
        window = {start % 24, (start + 1) % 24, (start + 2) % 24}
        if not window & {h for hour in local_hours for h in (hour, (hour + 1) % 24)}:
            return {"start": f"{start:02d}:00", "end": f"{(start + 2) % 24:02d}:00"}
    raise RuntimeError("no quiet window fits")


def merchant(with_policies: bool):
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ContactTimezone
    from app.services import settings
    from tests.support.campaigns import add_contacts, email_campaign, verified_merchant

    user = verified_merchant()
    contacts = add_contacts(user, RECIPIENTS, prefix=f"p{int(with_policies)}-")
    if with_policies:
        db.session.execute(sa.insert(ContactTimezone), [
            {"contact_id": c.id, "timezone": ZONES[i % len(ZONES)], "source": "merchant"}
            for i, c in enumerate(contacts)])
        db.session.commit()
        settings.update_settings(user.id, {
            "quiet_hours": {"email": quiet_hours_outside_now()},
            "frequency_caps": {"email": [{"messages": 1, "window_hours": 16}, {"messages": 5, "window_hours": 168}]},
        })
    campaign, _ = email_campaign(user)
    return user.id, campaign.id


def main() -> None:
    from tests.support.smtp_sink import SmtpSink

    port = free_port()
    BENCH_ENV["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    prepare_database()
    app = bench_app()
    sink = SmtpSink(port=port).start()
    rates = {}
    try:
        with app.app_context():
            plain = merchant(with_policies=False)
            policed = merchant(with_policies=True)
        celery = app.extensions["celery"]
        with celery_worker(celery, "campaigns,sends,default", concurrency=2):
            for name, (user_id, campaign_id) in (("off", plain), ("on", policed)):
                sink.clear()
                started = time.perf_counter()
                rates[name] = RECIPIENTS / launch_and_time(app, user_id, campaign_id)
                received = sink.messages
                assert len(received) == RECIPIENTS, (name, len(received), time.perf_counter() - started)
                assert len({m.recipients for m in received}) == RECIPIENTS
    finally:
        sink.stop()
    print(f"20,000-recipient email campaign: policies on {rates['on']:7.0f} messages/s   "
          f"policies off {rates['off']:7.0f} messages/s   ratio {rates['on'] / rates['off']:.2f} (aim >= 0.8)")


if __name__ == "__main__":
    main()
