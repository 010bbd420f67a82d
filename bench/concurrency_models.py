"""How to keep many messages in flight: the send engine's model (a thread pool whose threads each keep
their own keep-alive connection) beside asyncio clients (httpx, aiohttp, aiosmtplib) doing the same
work against the same servers, at 100 ms answers and at instant ones.

Each model runs in a process of its own and sends 2,000 Twilio Messages.json requests (32 at once)
or 2,000 messages over 8 SMTP connections. Printed: messages/s, and the client's CPU time per
message (what decides how many senders one worker core can carry; at 100 ms every model is bound by
the provider, so CPU is the difference that matters). The engine's other per-message work (rendering,
the ledger on psycopg2) is synchronous in every model.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import smtplib
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.harness import free_port

MESSAGES, HTTP_IN_FLIGHT, SMTP_CONNECTIONS = 2000, 32, 8
SID, TOKEN = "AC" + "be" * 16, "bench-twilio-token"
Work = list[tuple[str, dict[str, str]]]


def _timed(run) -> tuple[float, float]:
    """(messages/s, CPU µs per message) of `run()`, which sends MESSAGES messages."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return MESSAGES / wall, cpu / MESSAGES * 1e6


# --- HTTP -------------------------------------------------------------------------------------

def http_threads(url: str, forms: Work) -> tuple[float, float]:
    """The engine's model: a pool of threads, each with its own requests.Session."""
    local = threading.local()

    def post(form: dict[str, str]) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        session.post(url, data=form, auth=(SID, TOKEN), timeout=(5, 30)).raise_for_status()

    def run() -> None:
        with ThreadPoolExecutor(HTTP_IN_FLIGHT) as pool:
            list(pool.map(post, (form for _, form in forms)))
    return _timed(run)


def http_httpx(url: str, forms: Work) -> tuple[float, float]:
    import httpx

    async def run() -> None:
        limits = httpx.Limits(max_connections=HTTP_IN_FLIGHT, max_keepalive_connections=HTTP_IN_FLIGHT)
        async with httpx.AsyncClient(limits=limits, auth=(SID, TOKEN), timeout=30) as client:
            async def post(form: dict[str, str]) -> None:
                (await client.post(url, data=form)).raise_for_status()
            await _each(post, forms, HTTP_IN_FLIGHT)
    return _timed(lambda: asyncio.run(run()))


def http_aiohttp(url: str, forms: Work) -> tuple[float, float]:
    import aiohttp

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT)
        async with aiohttp.ClientSession(connector=connector, auth=aiohttp.BasicAuth(SID, TOKEN)) as session:
            async def post(form: dict[str, str]) -> None:
                async with session.post(url, data=form) as answer:
                    answer.raise_for_status()
                    await answer.read()
            await _each(post, forms, HTTP_IN_FLIGHT)
    return _timed(lambda: asyncio.run(run()))


async def _each(post, forms: Work, in_flight: int) -> None:
    """`in_flight` coroutines taking the next request as one answers (as the engine's threads do)."""
    pending = [form for _, form in reversed(forms)]

    async def client() -> None:
        while pending:
            await post(pending.pop())
    await asyncio.gather(*(client() for _ in range(in_flight)))


# --- SMTP -------------------------------------------------------------------------------------

def _mail(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@example.com", to, "Our sale ends tonight"
    message.set_content("Hi, our sale ends tonight.\n" * 20)
    return message


def smtp_threads(port: int, recipients: list[str]) -> tuple[float, float]:
    """The engine's model: one thread per connection, each reusing its smtplib connection."""
    pending, lock = list(recipients), threading.Lock()

    def connection() -> None:
        with smtplib.SMTP("127.0.0.1", port) as client:
            while True:
                with lock:
                    if not pending:
                        return
                    to = pending.pop()
                client.send_message(_mail(to))

    def run() -> None:
        threads = [threading.Thread(target=connection) for _ in range(SMTP_CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return _timed(run)


def smtp_aiosmtplib(port: int, recipients: list[str]) -> tuple[float, float]:
    import aiosmtplib

    async def run() -> None:
        pending = list(recipients)

        async def connection() -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
                while pending:
                    await client.send_message(_mail(pending.pop()))
        await asyncio.gather(*(connection() for _ in range(SMTP_CONNECTIONS)))
    return _timed(lambda: asyncio.run(run()))


def in_own_process(function, *args) -> tuple[float, float]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    from tests.emulators.twilio import TwilioEmulator
    from tests.support.smtp_sink import SmtpSink

    forms = [("", {"To": f"+1415{i:07d}", "From": "+15005550006", "Body": f"Hi N{i}, our sale ends tonight."})
             for i in range(MESSAGES)]
    recipients = [f"c{i}@example.com" for i in range(MESSAGES)]
    print(f"{MESSAGES} messages; {HTTP_IN_FLIGHT} HTTP requests / {SMTP_CONNECTIONS} SMTP connections at once; "
          f"msg/s and client CPU per message")
    for latency in (0.1, 0.0):
        with TwilioEmulator(accounts={SID: TOKEN}) as twilio:
            twilio.latency = latency
            url = f"{twilio.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
            http = {name: in_own_process(model, url, forms) for name, model in
                    (("threads + requests (the engine)", http_threads), ("asyncio + httpx", http_httpx),
                     ("asyncio + aiohttp", http_aiohttp))}
            assert len(twilio.requests_to("/Messages.json", "POST")) == MESSAGES * len(http)
        port = free_port()
        sink = SmtpSink(port=port, data_latency=latency).start()
        try:
            smtp = {name: in_own_process(model, port, recipients) for name, model in
                    (("threads + smtplib (the engine)", smtp_threads), ("asyncio + aiosmtplib", smtp_aiosmtplib))}
            assert len(sink.messages) == MESSAGES * len(smtp)
        finally:
            sink.stop()
        threads_http, threads_smtp = http["threads + requests (the engine)"], smtp["threads + smtplib (the engine)"]
        for results, baseline in ((http, threads_http), (smtp, threads_smtp)):
            for name, (rate, cpu) in results.items():
                print(f"  answers after {latency * 1000:3.0f} ms  {name:<32} {rate:7.1f} msg/s "
                      f"({rate / baseline[0]:.2f} of threads)   {cpu:6.0f} µs CPU/msg")


if __name__ == "__main__":
    main()
