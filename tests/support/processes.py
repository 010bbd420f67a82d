"""Real Herald processes (celery worker, celery beat) started for a test, as the Procfile runs them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import TEST_ENV

ROOT = Path(__file__).resolve().parent.parent.parent


def process_env(**overrides: str) -> dict[str, str]:
    env = {**os.environ, **TEST_ENV, **overrides}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def start(args: list[str], **overrides: str) -> subprocess.Popen:
    # A session of its own, so the whole process group (a prefork worker and its children) can be
    # killed at once.
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", *args], cwd=ROOT,
                            env=process_env(**overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


@contextmanager
def worker(celery_app, queues: str = "campaigns,sends,default", concurrency: int = 2,
           **overrides: str) -> Iterator[subprocess.Popen]:
    name = f"test-{time.monotonic_ns()}@{socket.gethostname()}"
    proc = start(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "WARNING",
                  "--without-gossip", "--without-mingle", "-n", name], **overrides)
    try:
        # This worker's own answer, taken as soon as it comes (a ping otherwise waits out its timeout).
        wait_until(lambda: bool(celery_app.control.ping(destination=[name], limit=1, timeout=0.25)), timeout=60,
                   what="worker start")
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)


# Beat in tests sweeps for due launches and lapsed leases every second, not every 15 and 10 s: what a
# test waits for is the sweep itself, not its production interval (tests/test_worker.py checks that).
BEAT_SWEEPS = {"BEAT_LAUNCH_DUE_SECONDS": "1", "BEAT_REAP_STALLED_SECONDS": "1"}


@contextmanager
def beat(schedule_file: Path, **overrides: str) -> Iterator[subprocess.Popen]:
    proc = start(["beat", "--loglevel", "WARNING", "--schedule", str(schedule_file)], **{**BEAT_SWEEPS, **overrides})
    try:
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)


def wait_until(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def campaign_status(app, campaign_id) -> str | None:
    from app.extensions import db
    from app.services import delivery_ledger

    with app.app_context():
        status = delivery_ledger.campaign_status(campaign_id)
        db.session.remove()
        return status


def reap_until_completed(app, campaign_id, timeout: float = 120) -> None:
    """Do what beat does every 30 s (settle lapsed leases, restart stalled sending) until the
    campaign completes: how a campaign recovers after its worker was killed."""
    from app.extensions import db
    from app.services import sending

    def completed() -> bool:
        with app.app_context():
            sending.reap_and_resume()
            db.session.remove()
        return campaign_status(app, campaign_id) == "completed"

    wait_until(completed, timeout=timeout, what="the campaign to complete after the crash", interval=1)
