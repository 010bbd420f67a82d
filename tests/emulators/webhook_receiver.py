"""A merchant's webhook endpoint: a real HTTP server on 127.0.0.1 that answers 200 to whatever Herald
posts (or a scripted failure first: `fail_next`), and keeps every request for the test to check
(ids, bodies, signatures). `hold_next()` keeps the next request waiting, unanswered, until
`release()`: a request in flight when a test kills the worker that sent it."""
from __future__ import annotations

import json
import threading

from werkzeug.wrappers import Request, Response

from tests.emulators.http_server import EmulatorServer, RecordedRequest, json_response


class WebhookReceiver(EmulatorServer):
    def __init__(self) -> None:
        super().__init__()
        self._hold = False
        self.holding = threading.Event()  # set while a held request waits
        self._released = threading.Event()

    def hold_next(self) -> None:
        with self.lock:
            self._hold, self._released = True, threading.Event()

    def release(self) -> None:
        self._released.set()

    def handle(self, request: Request) -> Response:
        with self.lock:
            hold, self._hold = self._hold, False
        if hold:
            self.holding.set()
            self._released.wait(timeout=60)
        return json_response({"received": True})

    def answered_ok(self) -> list[RecordedRequest]:
        """The requests answered 200: every one but the scripted failures, and but those whose sender
        died before its body arrived (a worker SIGKILLed mid-request leaves one with no body)."""
        failed = {id(request) for request, _ in self.faults_answered}
        return [r for r in self.requests if id(r) not in failed and r.body]

    def events(self, requests: list[RecordedRequest] | None = None) -> list[dict]:
        return [json.loads(r.body) for r in (self.requests if requests is None else requests)]
