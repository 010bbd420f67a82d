"""A tiny real HTTP server for provider emulators: a WSGI app on 127.0.0.1 in a background thread.

It is cheroot (CherryPy's HTTP/1.1 server): connections are kept alive between requests, as the
real providers' are, so a client's connection reuse is exercised and costs what it costs there.

Emulators subclass `EmulatorServer` and implement `handle()`. The base records every request
(for assertions), injects scripted faults (`fail_next`, `rate_limit_next`) before `handle()` runs,
and turns an exception in `handle()` into a 500 that the test can still see in `server_errors`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from werkzeug.wrappers import Request, Response

log = logging.getLogger(__name__)


SERVER_THREADS = 96


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator received it."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any  # parsed JSON body, or None when the body was not JSON
    form: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    at: float = 0.0  # time.monotonic() when it arrived


    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (HTTP header names are case-insensitive)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: float | None = None


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, mimetype="application/json")


class EmulatorServer:
    """Base class: start/stop a threaded HTTP server and keep a log of what it was asked."""

    def __init__(self) -> None:
        # One re-entrant lock guards the request log, the fault queue and every subclass's state,
        # because the server answers requests on many threads at once.
        self.lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self.server_errors: list[str] = []
        # Seconds every answer takes, as a real provider's does (100–300 ms); 0 answers at once.
        self.latency = 0.0
        self._active = 0
        self.peak_concurrency = 0  # the most requests it was answering at once
        self.faults_answered: list[tuple[RecordedRequest, int]] = []  # (request, status) of each injected fault
        # (certificate file, key file) to answer over TLS instead of plain HTTP; set before start().
        self.tls_files: tuple[str, str] | None = None
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        # Port 0: the OS picks a free port, so parallel test runs never collide. Enough threads for
        # every message a test or benchmark keeps in flight at once.
        self._server = wsgi.Server(("127.0.0.1", 0), self._wsgi, numthreads=SERVER_THREADS,
                                   request_queue_size=SERVER_THREADS, shutdown_timeout=1)
        self._server.expiration_interval = 0.05  # how often it looks at idle connections (and stop())
        self._server.keep_alive_conn_limit = SERVER_THREADS  # cheroot closes idle ones beyond 10 otherwise
        if self.tls_files:
            self._server.ssl_adapter = BuiltinSSLAdapter(*self.tls_files)
        self._server.prepare()
        self._thread = threading.Thread(target=self._server.serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.bind_addr[1]

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` (https with `tls_files`) with no trailing slash."""
        return f"{'https' if self.tls_files else 'http'}://127.0.0.1:{self.port}"

    # -- request log -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot copy, safe to iterate while the server keeps answering."""
        with self.lock:
            return list(self._requests)

    def requests_to(self, path_suffix: str = "", method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests
                if r.path.endswith(path_suffix) and (method is None or r.method == method.upper())]

    def clear_requests(self) -> None:
        with self.lock:
            self._requests.clear()

    # -- fault injection -------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 502) -> None:
        """Answer the next n requests with a server error (`status`), before any auth or logic."""
        with self.lock:
            self._faults.append(_Fault(n, status))

    def rate_limit_next(self, n: int = 1, retry_after: float = 1) -> None:
        """Answer the next n requests as the provider does when rate limiting (429 + Retry-After)."""
        with self.lock:
            self._faults.append(_Fault(n, 429, retry_after))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def _take_fault(self) -> _Fault | None:
        with self.lock:
            while self._faults and self._faults[0].remaining <= 0:
                self._faults.pop(0)
            if not self._faults:
                return None
            self._faults[0].remaining -= 1
            return self._faults[0]

    # -- hooks for subclasses --------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def server_error_response(self, status: int) -> Response:
        """Body of an injected 5xx; providers' edges usually answer HTML, so clients must not parse it."""
        return Response(f"<html><body><h1>{status} Server Error</h1></body></html>", status=status,
                        mimetype="text/html")

    def rate_limited_response(self, retry_after: float) -> Response:
        return json_response({"errors": "Too Many Requests"}, 429, {"Retry-After": _seconds(retry_after)})

    # -- WSGI plumbing ---------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        recorded = self._record(request)
        with self.lock:
            self._active += 1
            self.peak_concurrency = max(self.peak_concurrency, self._active)
        try:
            response = self._respond(request, recorded)
        finally:
            with self.lock:
                self._active -= 1
        return response(environ, start_response)

    def _respond(self, request: Request, recorded: RecordedRequest) -> Response:
        if self.latency:
            time.sleep(self.latency)
        fault = self._take_fault()
        if fault is not None:
            with self.lock:
                self.faults_answered.append((recorded, fault.status))
            if fault.retry_after is not None:
                return self.rate_limited_response(fault.retry_after)
            return self.server_error_response(fault.status)
        try:
            return self.handle(request)
        except Exception:  # noqa: BLE001 — an emulator bug must fail the test loudly, not hang the client
            error = traceback.format_exc()
            log.error("emulator %s crashed:\n%s", type(self).__name__, error)
            with self.lock:
                self.server_errors.append(error)
            return json_response({"error": "emulator crashed", "detail": error}, 500)

    def _record(self, request: Request) -> RecordedRequest:
        body = request.get_data(cache=True)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers.items()),
            query=request.args.to_dict(),
            json=request.get_json(silent=True, force=True) if body else None,
            form=request.form.to_dict(),
            body=body,
            at=time.monotonic(),
        )
        with self.lock:
            self._requests.append(recorded)
        return recorded


def _seconds(value: float) -> str:
    """Render a Retry-After value the way Shopify does ("2.0"); whole seconds stay parseable as int."""
    return f"{float(value):.1f}"
