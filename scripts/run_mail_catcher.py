"""Development mail catcher (`python scripts/run_mail_catcher.py`, the Procfile's `mail`).

Runs maildump where SMTP_URL points, so every mail Herald sends in development (verification links,
campaigns) can be read in a browser at http://127.0.0.1:$MAIL_CATCHER_PORT, or through its JSON API
(`/messages/`, `/messages/<id>.plain`). Both listen on localhost only.

When SMTP_URL names another host, or something already listens on its port, mail goes there and this
process only says so and waits: honcho stops every process when one exits.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def catcher_address(smtp_url: str) -> tuple[str, int] | None:
    """(host, port) to catch mail on, or None when SMTP_URL sends mail off this machine."""
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "") or parts.hostname not in LOCAL_HOSTS:
        return None
    return parts.hostname, parts.port or 25


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait(reason: str) -> None:
    print(f"mail catcher not started: {reason}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def main() -> None:
    smtp_url = os.environ.get("SMTP_URL", "smtp://127.0.0.1:1025")
    address = catcher_address(smtp_url)
    if address is None:
        _wait(f"SMTP_URL sends mail to {urlsplit(smtp_url).hostname}")
    host, port = address
    if _listening(host, port):
        _wait(f"something already listens on {host}:{port} (SMTP_URL); mail goes there")
    web_port = os.environ.get("MAIL_CATCHER_PORT", "1080")
    # maildump 1.0 (Python 3.11) is built on the deprecated smtpd/asyncore modules.
    os.environ["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    os.execv(sys.executable, [
        sys.executable, "-m", "maildump_runner.main", "--foreground", "--no-quit",
        "--smtp-ip", host, "--smtp-port", str(port), "--http-ip", "127.0.0.1", "--http-port", web_port,
    ])


if __name__ == "__main__":
    main()
