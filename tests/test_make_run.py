"""`make run`'s processes, started as it starts them (honcho with the Procfile), on free ports and the
test database: the verification mail lands in the development mail catcher, and its link verifies."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_ENV
from tests.support.accounts import PASSWORD, unique_email
from tests.support.processes import ROOT, wait_until

sys.path.insert(0, str(ROOT / "scripts"))
from run_mail_catcher import catcher_address

HIDDEN_TOKEN = re.compile(r'<input type="hidden" name="token" value="([^"]+)">')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting up
        return False


@contextmanager
def make_run(tmp_path: Path, **settings: str) -> Iterator[Path]:
    """honcho starting the processes `make run` starts, with `settings` as its env file (the `.env`)."""
    env_file = tmp_path / "dev.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    log = tmp_path / "honcho.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "honcho", "-e", str(env_file), "start", "--port", settings["PORT"],
             "web", "worker", "beat", "mail"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            yield log
        finally:
            proc.send_signal(signal.SIGTERM)  # honcho stops its processes, then itself
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_make_run_delivers_the_verification_mail_to_the_catcher_and_its_link_verifies(app, committed_db, tmp_path):
    web_port, smtp_port, catcher_port = _free_port(), _free_port(), _free_port()
    web = f"http://127.0.0.1:{web_port}"
    catcher = f"http://127.0.0.1:{catcher_port}"
    settings = {
        **{key: value for key, value in TEST_ENV.items() if key not in ("SMTP_URL", "PUBLIC_BASE_URL")},
        "HERALD_ENV": "development", "PORT": str(web_port), "WEB_ADDRESS": "127.0.0.1", "WEB_CONCURRENCY": "1",
        "PUBLIC_BASE_URL": web, "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}", "MAIL_CATCHER_PORT": str(catcher_port),
        "CELERYBEAT_SCHEDULE_FILE": str(tmp_path / "celerybeat-schedule"),
    }
    with make_run(tmp_path, **settings) as log:
        try:
            wait_until(lambda: _answers(f"{web}/healthz") and _answers(f"{catcher}/messages/"), timeout=90,
                       what="the web process and the mail catcher", interval=0.5)
            email = unique_email("newcomer")
            registered = requests.post(f"{web}/api/v1/auth/register", json={"email": email, "password": PASSWORD},
                                       timeout=10)
            assert registered.status_code == 201, registered.text

            # The catcher's JSON API, as its web page reads it.
            def mail_for_newcomer() -> list[dict]:
                messages = requests.get(f"{catcher}/messages/", timeout=5).json()["messages"]
                return [m for m in messages if email in m["recipients"]["to"]]

            wait_until(lambda: bool(mail_for_newcomer()), timeout=60, what="the verification mail", interval=0.5)
            (mail,) = mail_for_newcomer()
            assert "Confirm" in mail["subject"]
            text = requests.get(f"{catcher}/messages/{mail['id']}.plain", timeout=5).text
            link = re.search(rf"{re.escape(web)}/verify-email\?token=([A-Za-z0-9_\-]+)", text)
            link, token = link.group(0), link.group(1)

            page = requests.get(link, timeout=10)
            assert page.status_code == 200 and '<button type="submit">' in page.text
            confirmed = requests.post(link, data={"token": HIDDEN_TOKEN.search(page.text).group(1)}, timeout=10)
            assert confirmed.status_code == 200 and "Email address confirmed" in confirmed.text

            login = requests.post(f"{web}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
            assert login.status_code == 200 and login.json()["user"]["isVerified"] is True
            assert token not in log.read_text(), "a process logged the verification token"
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n--- honcho output ---\n{log.read_text()[-4000:]}") from failure


@pytest.mark.parametrize("smtp_url, address", [
    ("smtp://127.0.0.1:1025", ("127.0.0.1", 1025)),
    ("smtp://localhost:2525", ("localhost", 2525)),
    ("smtp://user:pass@smtp.example.com:587?starttls=1", None),
    ("smtps://127.0.0.1:465", None),
])
def test_the_catcher_listens_where_smtp_url_points_on_this_machine_only(smtp_url, address):
    assert catcher_address(smtp_url) == address
