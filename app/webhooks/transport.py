"""The HTTP request of one webhook attempt: posted to the address that was checked (no private
networks, no second lookup: app.channels.endpoint_guard), redirects not followed, at most
`timeout` seconds, and only the start of the answer kept for the delivery log."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from app.channels.endpoint_guard import EndpointGuard, EndpointRefused, Network, PinnedAdapter

ANSWER_EXCERPT = 1000  # characters of the receiver's answer kept in the log


@dataclass(frozen=True)
class Answer:
    ok: bool  # a 2xx: delivered
    status: int | None  # the HTTP status, None when no answer came
    body: str | None  # the start of the answer's body
    error: str | None  # why it failed, as the log shows it
    duration_ms: int


class WebhookClient:
    """One per delivery run; each posting thread keeps its own keep-alive session."""

    def __init__(self, allowed_private: Sequence[Network], timeout: float) -> None:
        self._guard = EndpointGuard(allowed_private, what="webhook endpoint")
        self._timeout = timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy from the environment: it would look the host up again
            adapter = PinnedAdapter(self._guard)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.monotonic()

        def answer(ok: bool, status: int | None, text: str | None, error: str | None) -> Answer:
            return Answer(ok, status, text, error, int((time.monotonic() - started) * 1000))

        try:
            with self._session().post(url, data=body, headers=headers, timeout=self._timeout,
                                      allow_redirects=False, stream=True) as response:
                text = _excerpt(response, started + self._timeout)
        except EndpointRefused as exc:
            return answer(False, None, None, str(exc))
        except requests.Timeout:
            return answer(False, None, None, f"No answer within {self._timeout:g} s.")
        except requests.RequestException as exc:
            return answer(False, None, None, f"Could not reach the endpoint: {type(exc).__name__}.")
        if 200 <= response.status_code < 300:
            return answer(True, response.status_code, text, None)
        return answer(False, response.status_code, text, f"The endpoint answered {response.status_code}.")

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _excerpt(response: requests.Response, deadline: float) -> str:
    """The start of the body, read until ANSWER_EXCERPT bytes or the deadline: a receiver that
    trickles an endless answer cannot hold the attempt past its time."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(256):
        chunks.append(chunk)
        size += len(chunk)
        if size >= ANSWER_EXCERPT or time.monotonic() >= deadline:
            break
    return b"".join(chunks)[:ANSWER_EXCERPT].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
