"""SMS campaign throughput: a 2,000-recipient SMS campaign from launch to completion, sent by a real
worker (2 processes) into the Twilio emulator over HTTP, beside a bare loop posting the same 2,000
Messages.json requests (same form, basic auth) over one requests.Session. Aim: ratio >= 0.7.

The bare loop runs in a process of its own, as the worker does: in the emulator's process it would
share the emulator's GIL and measure a lower ceiling than the worker gets."""
from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.harness import (
    BENCH_ENV,
    bench_app,
    celery_worker,
    launch_and_time,
    prepare_database,
)

RECIPIENTS = 2000
ACCOUNT = {"accountSid": "AC" + "be" * 16, "authToken": "bench-twilio-token", "fromNumber": "+15005550006"}
BODY = "Hi {{ contact.firstName }}, our sale ends tonight. Reply STOP to opt out."


def create_campaign():
    """A merchant with a Twilio account, RECIPIENTS subscribed contacts with phones, an SMS campaign."""
    from app.extensions import db
    from app.models import Audience, Campaign, CampaignChannel, Contact
    from tests.support.campaigns import EVERYONE, verified_merchant
    from tests.support.providers import add_provider_account

    user = verified_merchant()
    add_provider_account(user, "sms", ACCOUNT)
    db.session.add_all([Contact(user_id=user.id, phone=f"+1415{i:07d}", first_name=f"N{i}", attributes={},
                                external_ids={}, consent={"sms": "subscribed"}, consent_sources={})
                        for i in range(RECIPIENTS)])
    campaign = Campaign(user_id=user.id, name="SMS bench", config={})
    db.session.add(campaign)
    db.session.flush()
    db.session.add_all([CampaignChannel(campaign_id=campaign.id, channel_type="sms", config={"body": BODY}),
                        Audience(campaign_id=campaign.id, name="everyone", definition=EVERYONE)])
    db.session.commit()
    return user.id, campaign.id


def campaign_rate(app, user_id, campaign_id) -> float:
    with celery_worker(app.extensions["celery"], "campaigns,sends,default", concurrency=2):
        return RECIPIENTS / launch_and_time(app, user_id, campaign_id)


def bare_loop(url: str, forms: list[dict[str, str]]) -> float:
    started = time.perf_counter()
    with requests.Session() as session:
        session.auth = (ACCOUNT["accountSid"], ACCOUNT["authToken"])
        for form in forms:
            response = session.post(url, data=form, timeout=(5, 20))
            assert response.status_code == 201, response.text
    return len(forms) / (time.perf_counter() - started)


def main() -> None:
    from tests.emulators.twilio import TwilioEmulator

    with TwilioEmulator(accounts={ACCOUNT["accountSid"]: ACCOUNT["authToken"]}) as twilio:
        BENCH_ENV["TWILIO_API_BASE_URL"] = twilio.base_url  # read by the worker processes too
        prepare_database()
        app = bench_app()
        with app.app_context():
            user_id, campaign_id = create_campaign()
        rate = campaign_rate(app, user_id, campaign_id)
        sent = twilio.requests_to("/Messages.json", "POST")
        assert len(sent) == RECIPIENTS and len({r.form["To"] for r in sent}) == RECIPIENTS
        url = f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT['accountSid']}/Messages.json"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            ceiling = pool.submit(bare_loop, url, [r.form for r in sent]).result()
        assert twilio.server_errors == []
    print(f"SMS campaign launch → completion: {rate:8.0f} messages/s   bare requests.Session loop: {ceiling:8.0f} "
          f"messages/s   ratio {rate / ceiling:.2f} (aim >= 0.7)")


if __name__ == "__main__":
    main()
