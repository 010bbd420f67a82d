"""/metrics: the backlog read from PostgreSQL moves as work is queued and done, the request
histogram counts requests (across gunicorn's workers too), and only this machine or a holder of
METRICS_TOKEN may read any of it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError
from app.extensions import db
from app.models import DataSource, Delivery
from app.services import event_processing, sending
from tests.conftest import make_app
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant
from tests.support.processes import ROOT, kill_group, process_env, wait_until
from tests.support.servers import free_port, wait_for_port
from tests.support.sources import make_merchant, make_source

TOKEN = "scrape-" + "t" * 32


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return samples(response.get_data(as_text=True))


@pytest.fixture()
def ctx(app, committed_db):
    with app.app_context():
        yield app.test_client()
        db.session.remove()


def test_events_waiting_and_the_age_of_the_oldest_move_with_ingest_and_processing(ctx):
    before = scrape(ctx)
    assert value(before, "herald_backlog_up") == 1
    source, key = make_source(make_merchant(), "facebook_pixel")
    batch = {"data": [{"event_name": "Purchase", "event_time": int(time.time()) - i, "event_id": f"e{i}",
                       "user_data": {"em": [f"buyer{i}@example.com"]}, "custom_data": {"value": 10, "currency": "EUR"}}
                      for i in range(3)]}
    accepted = ctx.post(f"/ingest/facebook-pixel/{source.id}", json=batch, headers={"X-Ingest-Key": key})
    assert accepted.status_code == 202, accepted.get_json()

    waiting = scrape(ctx)
    assert value(waiting, "herald_events_pending") == value(before, "herald_events_pending") + 3
    assert value(waiting, "herald_events_oldest_pending_age_seconds") >= 0

    event_processing.process_pending()
    done = scrape(ctx)
    assert value(done, "herald_events_pending") == 0
    assert value(done, "herald_events_oldest_pending_age_seconds") == 0


def test_deliveries_queued_sending_unknown_sent_and_delivered_per_channel(ctx, smtp_sink):
    user = verified_merchant()
    add_contacts(user, 6)
    campaign, channel = email_campaign(user)
    before = scrape(ctx)
    for status in ("queued", "sending", "unknown"):
        assert value(before, "herald_deliveries", channel="sms", status=status) == 0  # every channel, even idle
    launch(user.id, campaign.id)

    queued = scrape(ctx)
    assert value(queued, "herald_deliveries", channel="email", status="queued") == 6
    # A sender that dies with two messages out: sending until its lease runs out, then unknown.
    stranded = db.session.scalars(sa.select(Delivery.id).where(Delivery.channel_id == channel.id).limit(2)).all()
    db.session.execute(sa.update(Delivery).where(Delivery.id.in_(stranded)).values(
        status="sending", lease_expires_at=sa.func.now() - sa.text("interval '1 minute'"), claimed_at=sa.func.now()))
    db.session.commit()
    in_flight = scrape(ctx)
    assert value(in_flight, "herald_deliveries", channel="email", status="queued") == 4
    assert value(in_flight, "herald_deliveries", channel="email", status="sending") == 2

    sending.reap_and_resume()
    assert sending.send_channel(channel.id) == 4
    smtp_sink.wait_for(4)
    after = scrape(ctx)
    assert value(after, "herald_deliveries", channel="email", status="queued") == 0
    assert value(after, "herald_deliveries", channel="email", status="sending") == 0
    assert value(after, "herald_deliveries", channel="email", status="unknown") == 2
    assert value(after, "herald_messages_sent_total", channel="email") == \
        value(before, "herald_messages_sent_total", channel="email") + 4
    # Email counts as delivered once the relay took it.
    assert value(after, "herald_receipts_applied_total", channel="email", outcome="delivered") == \
        value(before, "herald_receipts_applied_total", channel="email", outcome="delivered") + 4


def test_sources_whose_syncs_fail_are_counted_per_type(ctx):
    source, _ = make_source(make_merchant(), "shopify")
    assert value(scrape(ctx), "herald_sources_failing", source_type="shopify") == 0
    db.session.execute(sa.update(DataSource).where(DataSource.id == source.id).values(status="error"))
    db.session.commit()
    assert value(scrape(ctx), "herald_sources_failing", source_type="shopify") == 1


def test_the_request_histogram_counts_requests_by_route_and_status(client):
    def count(found, route, status):
        return found.get(("herald_http_request_duration_seconds_count",
                          frozenset({"method": "GET", "route": route, "status": status}.items())), 0)

    before = scrape(client)
    for _ in range(3):
        client.get("/healthz")
    client.get(f"/api/v1/contacts/{uuid.uuid4()}")  # 401, counted under its pattern, not its id
    after = scrape(client)
    assert count(after, "/healthz", "200") == count(before, "/healthz", "200") + 3
    assert count(after, "/api/v1/contacts/<uuid:contact_id>", "401") == \
        count(before, "/api/v1/contacts/<uuid:contact_id>", "401") + 1


def test_without_a_token_only_this_machine_may_scrape(client):
    assert client.get("/metrics").status_code == 200
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and "METRICS_TOKEN" in remote.get_json()["message"]
    # A proxy on this machine connects from 127.0.0.1: what it forwards is not local.
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_with_a_token_a_scrape_must_send_it_from_anywhere():
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-" + TOKEN}).status_code == 403
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                         environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert allowed.status_code == 200 and b"herald_http_request_duration_seconds" in allowed.data


def test_a_database_that_is_down_leaves_the_scrape_answering_with_up_0():
    client = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/herald_test").test_client()
    found = scrape(client)
    assert value(found, "herald_backlog_up") == 0
    assert not any(name == "herald_events_pending" for name, _ in found)


@pytest.mark.slow
def test_gunicorn_workers_add_up_their_requests_in_one_scrape(committed_db, tmp_path):
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:create_app()", "--bind", f"127.0.0.1:{port}",
                            "--workers", "2", "--no-control-socket"], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)),
                           start_new_session=True)
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz", timeout=60).ok  # answered once a worker has booted

        def healthz(requests_sent: int) -> list[int]:
            # Four clients at once, a connection per request: each sync worker takes one at a time.
            with ThreadPoolExecutor(4) as pool:
                return list(pool.map(lambda _: requests.get(f"{base}/healthz", timeout=30,
                                                            headers={"Connection": "close"}).status_code,
                                     range(requests_sent)))

        def healthz_count() -> float:
            found = samples(requests.get(f"{base}/metrics", timeout=10).text)
            assert value(found, "herald_backlog_up") == 1
            return value(found, "herald_http_request_duration_seconds_count", method="GET", route="/healthz",
                         status="200")

        # Both workers up and each recording in a file of its own in the shared directory.
        wait_until(lambda: healthz(8) and len(list(tmp_path.glob("histogram_*.db"))) == 2, timeout=60,
                   what="both workers to serve")
        before = healthz_count()
        assert healthz(40) == [200] * 40
        assert healthz_count() == before + 40  # whichever worker answers the scrape
    finally:
        kill_group(web)


def test_the_grafana_dashboard_reads_only_metrics_herald_exports(client):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "herald.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bherald_[a-z_]+", expr)}
    exported = {name for name, _ in scrape(client)}
    exported |= {name.removesuffix("_total") for name in exported}  # counters are queried as name_total
    assert used and used <= exported, used - exported


def test_a_metrics_token_too_short_to_be_a_secret_stops_the_start():
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        make_app(METRICS_TOKEN="short")


def test_gunicorn_gives_its_workers_one_metrics_directory():
    shown = subprocess.run(
        [sys.executable, "-c", "import os, runpy; runpy.run_path('gunicorn.conf.py'); "
                               "print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"],
        cwd=ROOT, env={key: value for key, value in process_env().items() if key != "PROMETHEUS_MULTIPROC_DIR"},
        capture_output=True, text=True, check=True)
    directory = Path(shown.stdout.strip())
    assert directory.is_dir() and "herald-metrics" in directory.name
    directory.rmdir()
