"""Sending against providers that take 100 ms to answer, as real ones do (Twilio, the WhatsApp Cloud
API, a push service, an SMTP relay's reply to DATA).

For each channel: a 2,000-recipient campaign from launch to completion, sent by a real worker (2
processes, so two senders with `maxInFlight` 16 each, or 4 SMTP connections each), beside a plain
client with the same concurrency (32 HTTP connections, 8 SMTP connections) sending the same 2,000
messages to the same server in the same run, in a process of its own. Aim: ratio >= 0.8.

The plain client replays the requests the campaign made, byte for byte; for web push, whose every
message must be encrypted for its own subscription (RFC 8291) by whoever sends it, the plain client
encrypts and sends each message with pywebpush, with the campaign's VAPID header, as the channel
does (the replay of already encrypted bodies is printed beside it).

Then scale-out: one SMS campaign with one worker process and with two (500 ms answers, 8 in
flight per sender, so neither the CPU nor a rate limit binds). Aim: speed-up >= 1.7.
"""
from __future__ import annotations

import logging
import multiprocessing
import smtplib
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
import sqlalchemy as sa

from bench.harness import (
    bench_app,
    celery_worker,
    free_port,
    launch_and_time,
    prepare_database,
)

RECIPIENTS = 2000
LATENCY = 0.1
HTTP_IN_FLIGHT, SMTP_CONNECTIONS, WORKER_PROCESSES = 16, 4, 2
TWILIO = {"accountSid": "AC" + "be" * 16, "authToken": "bench-twilio-token", "fromNumber": "+15005550006"}
WHATSAPP_TOKEN = "EAAG-bench-token"
CONFIGS: dict[str, dict[str, Any]] = {
    "sms": {"body": "Hi {{ contact.firstName }}, our sale ends tonight. Reply STOP to opt out."},
    "whatsapp": {"templateName": "hello_world", "language": "en_US"},
    "push": {"title": "Hi {{ contact.firstName }}", "body": "Our sale ends tonight"},
}
SKIPPED_HEADERS = {"host", "content-length", "connection", "accept-encoding"}


# --- The plain client (runs in a process of its own, like the worker) --------------------------

def plain_http(requests_to_send: list[tuple[str, dict[str, str], bytes]], concurrency: int) -> float:
    """`concurrency` threads, each with its own keep-alive session, posting the given requests."""
    def post(session: requests.Session, request: tuple[str, dict[str, str], bytes]) -> int:
        url, headers, body = request
        return session.post(url, headers=headers, data=body, timeout=(5, 30)).status_code

    return _over_sessions(requests_to_send, concurrency, post)


def plain_webpush(messages: list[tuple[dict[str, Any], bytes, dict[str, str]]], concurrency: int) -> float:
    """As plain_http, pushing each (subscription, plaintext, headers) with pywebpush: encrypted for
    its subscription, as any sender must."""
    from pywebpush import webpush

    def push(session: requests.Session, message: tuple[dict[str, Any], bytes, dict[str, str]]) -> int:
        subscription, plaintext, headers = message
        headers = dict(headers)
        return webpush(subscription, data=plaintext, ttl=int(headers.pop("TTL")), headers=headers,
                       requests_session=session, timeout=30).status_code

    return _over_sessions(messages, concurrency, push)


def _over_sessions(items: list[Any], concurrency: int, send: Any) -> float:
    """`send(session, item)` for each item from `concurrency` threads, each with its own keep-alive
    session; items per second. Every answer must be a success."""
    pending = list(reversed(items))
    lock = threading.Lock()
    failures: list[int] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not pending:
                        return
                    item = pending.pop()
                status = send(session, item)
                if status >= 300:
                    failures.append(status)

    started = time.perf_counter()
    _run_threads(client, concurrency)
    assert not failures, f"{len(failures)} requests failed, e.g. HTTP {failures[0]}"
    return len(items) / (time.perf_counter() - started)


def plain_smtp(port: int, messages: list[tuple[str, list[str], bytes]], connections: int) -> float:
    pending = list(reversed(messages))
    lock = threading.Lock()

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            while True:
                with lock:
                    if not pending:
                        return
                    mail_from, recipients, raw = pending.pop()
                smtp.sendmail(mail_from, recipients, raw)

    started = time.perf_counter()
    _run_threads(client, connections)
    return len(messages) / (time.perf_counter() - started)


def _run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def in_own_process(function, *args) -> float:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# --- Campaigns ---------------------------------------------------------------------------------

def merchant_with_recipients(channel_type: str, count: int, push=None, account: dict[str, Any] | None = None):
    """A verified merchant with a provider account for the channel and `count` reachable contacts."""
    from app.extensions import db
    from app.models import Contact, PushSubscription
    from tests.emulators.push_service import vapid_keys
    from tests.emulators.whatsapp import DEFAULT_PHONE_NUMBER_ID
    from tests.support.campaigns import verified_merchant
    from tests.support.providers import add_provider_account

    user = verified_merchant()
    limits = {"maxInFlight": HTTP_IN_FLIGHT, **(account or {})}
    people = [Contact(user_id=user.id, email=f"c{i}@example.com", phone=f"+1415{i:07d}", first_name=f"N{i}",
                      attributes={}, external_ids={}, consent={channel_type: "subscribed"}, consent_sources={})
              for i in range(count)]
    db.session.add_all(people)
    db.session.flush()
    if channel_type == "sms":
        add_provider_account(user, "sms", {**TWILIO, **limits})
    elif channel_type == "whatsapp":
        add_provider_account(user, "whatsapp", {"phoneNumberId": DEFAULT_PHONE_NUMBER_ID,
                                                "accessToken": WHATSAPP_TOKEN, **limits})
    elif channel_type == "push":
        private_key, public_key = vapid_keys()
        add_provider_account(user, "push", {"vapidPrivateKey": private_key, "vapidPublicKey": public_key,
                                            "subject": "mailto:ops@shop.test", **limits})
        for person in people:
            browser = push.new_subscription(application_server_key=public_key)
            db.session.add(PushSubscription(contact_id=person.id, endpoint=browser["endpoint"], **browser["keys"]))
    db.session.commit()
    return user


def campaign_rate(app, channel_type: str, user_id, count: int, processes: int, env: dict[str, str],
                  worker_count: int = 1) -> float:
    """Messages/s of one campaign from launch to completion, sent by `worker_count` workers."""
    from app.extensions import db
    from app.models import User
    from tests.support.campaigns import EMAIL_CONFIG, campaign_on

    with app.app_context():
        config = EMAIL_CONFIG if channel_type == "email" else CONFIGS[channel_type]
        campaign, _ = campaign_on(db.session.get(User, user_id), channel_type, config)
        campaign_id = campaign.id
    celery = app.extensions["celery"]
    with ExitStack() as stack:
        for index in range(worker_count):
            stack.enter_context(celery_worker(celery, "campaigns,sends,default", concurrency=processes,
                                              env=env, name=f"bench{index}", purge=index == 0))
        return count / launch_and_time(app, user_id, campaign_id)


def replayable(emulator, path_suffix: str) -> list[tuple[str, dict[str, str], bytes]]:
    return [(emulator.base_url + r.path, {k: v for k, v in r.headers.items() if k.lower() not in SKIPPED_HEADERS},
             r.body) for r in emulator.requests_to(path_suffix, "POST")]


def http_channel(app, channel_type: str, emulator, path_suffix: str) -> tuple[float, float, float]:
    """The campaign's rate, the plain client's and the replay's (the same for all but push)."""
    with app.app_context():
        user_id = merchant_with_recipients(channel_type, RECIPIENTS, push=emulator).id
    env = {"TWILIO_API_BASE_URL": emulator.base_url, "WHATSAPP_API_BASE_URL": emulator.base_url}
    rate = campaign_rate(app, channel_type, user_id, RECIPIENTS, WORKER_PROCESSES, env)
    sent = replayable(emulator, path_suffix)
    assert len(sent) == RECIPIENTS, f"{channel_type}: {len(sent)} requests for {RECIPIENTS} recipients"
    pushed = pushes(app, user_id, emulator) if channel_type == "push" else []  # before the replay's arrive
    replay = ceiling = in_own_process(plain_http, sent, HTTP_IN_FLIGHT * WORKER_PROCESSES)
    if pushed:
        ceiling = in_own_process(plain_webpush, pushed, HTTP_IN_FLIGHT * WORKER_PROCESSES)
    assert emulator.server_errors == []
    return rate, ceiling, replay


def pushes(app, user_id, emulator) -> list[tuple[dict[str, Any], bytes, dict[str, str]]]:
    """What the campaign pushed: each subscription (as a browser hands it over), the plaintext the
    push service decrypted, and the headers a sender sets (VAPID's signed once, as the channel does)."""
    from app.extensions import db
    from app.models import Contact, PushSubscription

    with app.app_context():
        keys = {row.endpoint.rsplit("/", 1)[-1]: {"endpoint": row.endpoint, "keys": {"p256dh": row.p256dh,
                                                                                    "auth": row.auth}}
                for row in db.session.scalars(sa.select(PushSubscription).join(Contact).where(
                    Contact.user_id == user_id))}
    sent = emulator.received
    assert len(sent) == RECIPIENTS
    wanted = {"authorization": "Authorization", "ttl": "TTL", "topic": "Topic"}
    return [(keys[push["subscription_id"]], push["plaintext"],
             {wanted[name.lower()]: value for name, value in push["headers"].items() if name.lower() in wanted})
            for push in sent]


def email_channel(app) -> tuple[float, float]:
    from tests.support.campaigns import add_contacts, verified_merchant
    from tests.support.smtp_sink import SmtpSink

    port = free_port()
    sink = SmtpSink(port=port, data_latency=LATENCY).start()
    try:
        with app.app_context():
            from app.extensions import db

            user = verified_merchant()
            add_contacts(user, RECIPIENTS)
            db.session.commit()
            user_id = user.id
        env = {"SMTP_URL": f"smtp://127.0.0.1:{port}", "SMTP_MAX_CONNECTIONS": str(SMTP_CONNECTIONS)}
        rate = campaign_rate(app, "email", user_id, RECIPIENTS, WORKER_PROCESSES, env)
        received = sink.messages
        assert len(received) == RECIPIENTS and len({m.recipients for m in received}) == RECIPIENTS
        messages = [(m.mail_from, list(m.recipients), m.raw) for m in received]
        ceiling = in_own_process(plain_smtp, port, messages, SMTP_CONNECTIONS * WORKER_PROCESSES)
    finally:
        sink.stop()
    return rate, ceiling


def scale_out(app) -> tuple[float, float]:
    """The same SMS campaign with one worker process, then with two."""
    from tests.emulators.twilio import TwilioEmulator

    recipients, in_flight = 600, 8
    with TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}) as twilio:
        twilio.latency = 0.5
        env = {"TWILIO_API_BASE_URL": twilio.base_url}
        rates = []
        for workers in (1, 2):
            with app.app_context():
                user_id = merchant_with_recipients("sms", recipients, account={"maxInFlight": in_flight}).id
            rates.append(campaign_rate(app, "sms", user_id, recipients, 1, env, worker_count=workers))
        assert len(twilio.requests_to("/Messages.json", "POST")) == 2 * recipients
    return rates[0], rates[1]


def main() -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command lines
    from tests.emulators.push_service import PushServiceEmulator
    from tests.emulators.twilio import TwilioEmulator
    from tests.emulators.whatsapp import WhatsAppEmulator

    prepare_database()
    app = bench_app()
    print(f"{RECIPIENTS} recipients, every answer after {LATENCY * 1000:.0f} ms; campaign launch → completion "
          f"beside a plain client with the same concurrency")
    emulators = {
        "sms": (TwilioEmulator(accounts={TWILIO["accountSid"]: TWILIO["authToken"]}), "/Messages.json"),
        "whatsapp": (WhatsAppEmulator(tokens={WHATSAPP_TOKEN}), "/messages"),
        "push": (PushServiceEmulator(), ""),
    }
    for channel_type, (emulator, suffix) in emulators.items():
        with emulator:
            emulator.latency = LATENCY
            rate, ceiling, replay = http_channel(app, channel_type, emulator, suffix)
        if channel_type == "push":
            _report(channel_type, rate, ceiling, f"pywebpush, {HTTP_IN_FLIGHT * WORKER_PROCESSES} HTTP connections")
            print(f"{'':>9}  (replaying the campaign's encrypted requests instead: {replay:7.1f} msg/s, "
                  f"ratio {rate / replay:.2f})")
        else:
            _report(channel_type, rate, ceiling, f"{HTTP_IN_FLIGHT * WORKER_PROCESSES} HTTP connections")
    rate, ceiling = email_channel(app)
    _report("email", rate, ceiling, f"{SMTP_CONNECTIONS * WORKER_PROCESSES} SMTP connections")
    one, two = scale_out(app)
    print(f"scale-out (SMS, 500 ms answers, 8 in flight per sender): one worker process {one:6.1f} msg/s   "
          f"two {two:6.1f} msg/s   speed-up {two / one:.2f}x (aim >= 1.7)")


def _report(channel_type: str, rate: float, ceiling: float, plain: str) -> None:
    print(f"{channel_type:>9}: campaign {rate:7.1f} msg/s   plain client ({plain}) {ceiling:7.1f} msg/s   "
          f"ratio {rate / ceiling:.2f} (aim >= 0.8)")


if __name__ == "__main__":
    main()
