"""gunicorn's settings for the web process, read from the working directory (the Procfile runs it
from the checkout): the directory where every worker records its requests for /metrics
(prometheus-client's multiprocess mode, app.metrics).

Set here, in the master, before any worker starts and imports prometheus-client: each worker then
writes its own files there and a scrape adds them all up.
"""
import os
import tempfile
from pathlib import Path

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="herald-metrics-")


def on_starting(server):
    # Files of a previous run would be added to this one's counts.
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
