"""Shared set-up for benchmarks: a migrated bench database, the web process as in the Procfile,
and a small closed-loop HTTP load generator."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/herald_bench")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

BENCH_ENV = {
    "HERALD_ENV": "development",
    "DATABASE_URL": BENCH_DATABASE_URL,
    "REDIS_URL": BENCH_REDIS_URL,
    "SECRET_KEY": "bench-secret-" + "s" * 32,
    "JWT_SECRET_KEY": "bench-jwt-secret-" + "j" * 32,
    "DATA_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "PUBLIC_BASE_URL": "http://127.0.0.1",
    "REGISTER_RATE_LIMIT_IP": "100000 per hour",
    "LOGIN_RATE_LIMIT_IP": "100000 per minute",
    "PUSH_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1",  # the push-service emulator
}


def bench_environ() -> dict[str, str]:
    env = {**os.environ, **BENCH_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def prepare_database() -> None:
    """Drop and rebuild the bench database through the real migrations."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    url = make_url(BENCH_DATABASE_URL)
    conn = psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    conn.close()
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"],
        cwd=ROOT, env=bench_environ(), check=True, capture_output=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def web_server(workers: int = 2) -> Iterator[str]:
    """gunicorn serving the app exactly as the Procfile's `web` line does."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "app:create_app()", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT, env=bench_environ(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise RuntimeError("gunicorn did not start")
        _until_idle(proc.pid, workers)  # one worker answering is not all of them having loaded the app
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _until_idle(parent: int, children: int, quiet: float = 0.5, timeout: float = 60) -> None:
    """Wait until `parent` has `children` processes and none of them used CPU for `quiet` seconds."""
    def cpu_ticks() -> dict[int, int]:
        pids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        ticks = {}
        for pid in map(int, pids):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks[pid] = int(fields[11]) + int(fields[12])
        return ticks

    deadline, last = time.monotonic() + timeout, cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_ticks()
        if len(now) >= children and now == last:
            return
        last = now
    raise RuntimeError(f"the workers were still busy after {timeout} s")


def wrk_requests_per_second(url: str, headers: dict[str, str] | None = None, seconds: int = 8,
                            connections: int = 8) -> float:
    """Requests/s measured by wrk (a C load generator, so the client costs little of the 2 cores)."""
    command = ["wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"non-2xx answers while measuring {url}:\n{output}")
    return float(next(line for line in output.splitlines() if line.startswith("Requests/sec:")).split()[1])


def requests_per_second(send: Callable[[requests.Session], int], seconds: float, concurrency: int = 4) -> float:
    """Closed loop: `concurrency` clients each send the next request as soon as one answers."""
    stop = time.monotonic() + seconds
    counts = [0] * concurrency
    failures: list[int] = []

    def client(index: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                status = send(session)
                if status >= 400:
                    failures.append(status)
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. HTTP {failures[0]}")
    return sum(counts) / (time.monotonic() - started)


@contextmanager
def celery_worker(celery_app, queues: str, concurrency: int = 2, env: dict[str, str] | None = None,
                  name: str = "bench", purge: bool = True) -> Iterator[None]:
    """A real worker process as in the Procfile (prefork), on the bench broker database, started on
    an empty broker (hints queued by earlier steps would otherwise run before the clock starts)."""
    if purge:
        celery_app.control.purge()
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "-c", str(concurrency),
         "-n", f"{name}@%h", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env={**bench_environ(), **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(name in reply for answer in celery_app.control.ping(timeout=0.5) for reply in answer):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def launch_and_time(app, user_id, campaign_id) -> float:
    """Seconds from the launch of a campaign to its completion (workers must be running)."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Campaign
    from app.services import campaign_lifecycle

    with app.app_context():
        started = time.perf_counter()
        campaign_lifecycle.launch_now(user_id, campaign_id)
        while db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id)) != "completed":
            db.session.rollback()
            time.sleep(0.05)
        return time.perf_counter() - started


def bench_app():
    """The Flask app configured like the bench processes (for set-up and sending tasks). This
    process's collector is tuned as the workers' are: the ceilings' bare clients run here, and a
    full collection of its heap (about a tenth of a second) otherwise lands in some of their
    sub-second runs and not in others."""
    os.environ.update(BENCH_ENV)
    from app import create_app
    from app.jobs import tune_gc

    app = create_app(BENCH_ENV)
    tune_gc()
    return app
