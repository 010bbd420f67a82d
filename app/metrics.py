"""Prometheus metrics on the web process, at /metrics: the HTTP request histogram and the backlogs
PostgreSQL holds (app.services.backlog), read at scrape time.

Under gunicorn every worker records its requests in PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before the workers start) and a scrape, whichever worker answers it, adds them up.
Elsewhere (one process) the histogram lives in this process.

Not for the internet: with METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`;
without it, only a client on this machine (a loopback address, not through a proxy) may scrape.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.errors import Forbidden
from app.services import backlog

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# A request that came through a proxy is not local, whatever address the proxy connects from.
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

REQUEST_SECONDS = Histogram(
    "herald_http_request_duration_seconds", "HTTP requests the web process answered, by route pattern and status.",
    ("method", "route", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def register_metrics(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.add_url_rule(METRICS_PATH, "metrics", metrics)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        # The route pattern, never the raw path: ids and tokens would make a series per request.
        route = request.url_rule.rule if request.url_rule else "(unmatched)"
        REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(time.perf_counter() - started)
    return response


def metrics() -> Response:
    _admit()
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_DIR):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(BacklogCollector())
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


def _admit() -> None:
    token = current_app.config["HERALD_SETTINGS"].metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Forbidden("Send METRICS_TOKEN as `Authorization: Bearer <token>` to read /metrics.")
        return
    if not _local_client():
        raise Forbidden("/metrics answers only on this machine unless METRICS_TOKEN is set.")


def _local_client() -> bool:
    if any(name in request.headers for name in _PROXY_HEADERS) and not current_app.config["HERALD_SETTINGS"].proxy_count:
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


class _ThisProcess(Collector):
    """The default registry's metrics (this process's histogram, its CPU and memory)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class BacklogCollector(Collector):
    """app.services.backlog's measures as Prometheus metrics, and whether they could be read."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            readings = backlog.read()
        except Exception:  # the scrape still answers: the request histogram, and `up` 0
            log.warning("the backlog could not be read", exc_info=True)
            readings = None
        up = GaugeMetricFamily("herald_backlog_up", "1 when the last scrape read the backlog from PostgreSQL.")
        up.add_metric([], 1 if readings is not None else 0)
        yield up
        took = GaugeMetricFamily("herald_backlog_read_seconds", "How long the scrape took to read the backlog.")
        took.add_metric([], time.perf_counter() - started)
        yield took
        for reading in readings or []:
            measure = reading.measure
            family_type = GaugeMetricFamily if measure.kind == "gauge" else CounterMetricFamily
            family = family_type(measure.name, measure.help, labels=measure.labels)
            for labels, value in sorted(reading.values.items()):
                family.add_metric(list(labels), value)
            yield family
