"""Structured (JSON-lines) logging with the request id or Celery task id on every record."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_access_log = logging.getLogger("herald.access")


class ContextFilter(logging.Filter):
    """Stamps each record with the id of the request or task it was written under."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
        else:
            from celery import (
                current_task,  # lazily: the web process may log before Celery is set up
            )

            task = current_task
            if task and task.request and task.request.id:
                record.task_id = task.request.id
                record.task_name = task.name
        return True


class JsonFormatter(logging.Formatter):
    _CONTEXT = ("request_id", "task_id", "task_name", "method", "path", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in self._CONTEXT if getattr(record, k, None) is not None})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)


def register_request_id(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
            elapsed = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
            # The route pattern, not the raw URL: paths and query strings can carry tokens.
            route = request.url_rule.rule if request.url_rule else "(unmatched)"
            _access_log.info(
                "request",
                extra={"method": request.method, "path": route, "status": response.status_code,
                       "duration_ms": round(elapsed, 2)},
            )
        return response
