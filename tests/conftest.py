"""Test fixtures: one real PostgreSQL database per run, built by the migrations; Redis on its own index
(under pytest-xdist, a database and an index for each of its workers).

Per-test isolation: every engine the app would use is replaced by a connection holding an outer
transaction, and the session joins it with savepoints, so an app-level commit or rollback stays
inside the test. Tests that need a real worker or competing connections use `committed_db`, which
leaves rows committed and truncates them afterwards.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import redis as redis_lib
from cryptography.fernet import Fernet
from flask import Flask
from psycopg2 import sql
from sqlalchemy.engine import make_url


def _xdist_worker_number() -> int | None:
    """K when pytest-xdist runs these tests in its worker gwK (`pytest -n N`), else None."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name.removeprefix("gw")) if name.startswith("gw") else None


def _own_database(url: str, worker: int | None) -> str:
    """Each xdist worker rebuilds and truncates a database of its own: `<name>_gw<K>`."""
    if worker is None:
        return url
    target = make_url(url)
    return target.set(database=f"{target.database}_gw{worker}").render_as_string(hide_password=False)


def _own_redis_index(url: str, worker: int | None) -> str:
    """... and flushes a Redis index of its own: K below the given one (never above: the benchmarks
    use the index above the default one)."""
    if worker is None:
        return url
    parts = urlsplit(url)
    index = int(parts.path.strip("/") or 0) - worker
    if index < 0:
        raise RuntimeError(f"TEST_REDIS_URL's index leaves no Redis index for pytest-xdist worker gw{worker}")
    return urlunsplit(parts._replace(path=f"/{index}"))


_XDIST_WORKER = _xdist_worker_number()
TEST_DATABASE_URL = _own_database(
    os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/herald_test"), _XDIST_WORKER)
TEST_REDIS_URL = _own_redis_index(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13"), _XDIST_WORKER)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _smtp_port() -> int:
    """A port of this run's own, so concurrent runs never collide (one given in TEST_SMTP_PORT is
    the first xdist worker's; the others take the ones after it)."""
    given = os.environ.get("TEST_SMTP_PORT")
    return int(given) + (_XDIST_WORKER or 0) if given else _free_port()


# Where the SMTP sink listens.
TEST_SMTP_PORT = _smtp_port()

TEST_ENV = {
    "HERALD_ENV": "test",
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": TEST_REDIS_URL,
    "SECRET_KEY": "test-secret-key-" + "s" * 32,
    "JWT_SECRET_KEY": "test-jwt-secret-" + "j" * 32,
    "DATA_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "PUBLIC_BASE_URL": "https://herald.test",
    "SMTP_URL": f"smtp://127.0.0.1:{TEST_SMTP_PORT}",
    "MAIL_FROM": "Herald <no-reply@herald.test>",
    # Many tests register from 127.0.0.1; the throttles themselves are tested with tight limits.
    "REGISTER_RATE_LIMIT_IP": "10000 per hour",
    # The provider emulators listen on 127.0.0.1: the one private address push endpoints may use here.
    "PUSH_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1",
    # Webhook receivers in tests listen on 127.0.0.1 too.
    "WEBHOOK_ALLOWED_PRIVATE_NETWORKS": "127.0.0.1",
    "WHATSAPP_APP_SECRET": "test-whatsapp-app-secret",
    "WHATSAPP_VERIFY_TOKEN": "test-whatsapp-verify-token",
    # Launches write their ledgers in many small chunks, so every campaign test exercises that.
    "LAUNCH_CHUNK_CONTACTS": "50",
    # Send policies read app.clock: tests move every process's clock on instead of sleeping, and a
    # channel whose rows wait is looked at every second, so a moved clock is noticed at once.
    "ADJUSTABLE_CLOCK": "1",
    "SEND_WAKE_SECONDS": "1",
}
# celeryconfig and any library reading the environment see the same settings as the app.
os.environ.update(TEST_ENV)

SEED_TABLES = (
    "users", "user_sessions", "token_blacklist", "data_sources", "data_events",
    "conversations", "messages", "campaigns", "campaign_channels",
)


def recreate_database(url: str) -> None:
    target = make_url(url)
    conn = psycopg2.connect(host=target.host, port=target.port, user=target.username, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.database)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
    conn.close()


def make_app(**overrides: str) -> Flask:
    from app import create_app

    return create_app({**TEST_ENV, **overrides})


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    from flask_migrate import upgrade

    recreate_database(TEST_DATABASE_URL)
    flask_app = make_app()
    with flask_app.app_context():
        upgrade()
    yield flask_app


@pytest.fixture()
def db_session(app: Flask) -> Iterator[None]:
    """Run the test inside one outer transaction that is rolled back at the end."""
    from app.extensions import db

    with app.app_context():
        engines = db.engines
        originals = dict(engines)
        connection = engines[None].connect()
        outer = connection.begin()
        # Flask-SQLAlchemy's get_bind returns this for every model, and the autocommit bind's
        # reads see the test's rows too.
        engines.update(dict.fromkeys(originals, connection))
        factory_kw = db.session.session_factory.kw
        db.session.remove()
        factory_kw["join_transaction_mode"] = "create_savepoint"
        try:
            yield
        finally:
            db.session.remove()
            del factory_kw["join_transaction_mode"]
            engines.update(originals)
            outer.rollback()
            connection.close()


@pytest.fixture()
def committed_db(app: Flask) -> Iterator[None]:
    """Rows are really committed (visible to workers and other connections); truncated afterwards."""
    from app.extensions import db

    yield
    with app.app_context():
        db.session.remove()
        tables = [t.name for t in db.metadata.sorted_tables]
        with db.engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@pytest.fixture()
def client(app: Flask, db_session: None):
    return app.test_client()


@pytest.fixture()
def live_client(app: Flask, committed_db: None):
    """A client whose requests really commit (for tests with a worker); tables truncated after."""
    return app.test_client()


@pytest.fixture()
def ctx(app: Flask, committed_db: None) -> Iterator[Flask]:
    """An app context over really committed rows (for tests with workers, threads or other
    connections); a test module may define its own `ctx` on top of other fixtures."""
    from app.extensions import db

    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture()
def app_ctx(app: Flask, db_session: None) -> Iterator[Flask]:
    with app.app_context():
        yield app


@pytest.fixture(scope="session")
def _smtp_server():
    from tests.support.smtp_sink import SmtpSink

    sink = SmtpSink(port=make_url_port(TEST_ENV["SMTP_URL"])).start()
    yield sink
    sink.stop()


@pytest.fixture()
def smtp_sink(_smtp_server):
    """The real SMTP server behind SMTP_URL, emptied for this test."""
    _smtp_server.clear()
    yield _smtp_server
    _smtp_server.clear()


def make_url_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port


@pytest.fixture()
def celery_worker(app, committed_db):
    """A real worker thread consuming every queue through the real Redis broker."""
    from celery.contrib.testing.worker import start_worker

    import celeryconfig

    with start_worker(app.extensions["celery"], pool="solo", perform_ping_check=False,
                      queues=list(celeryconfig.QUEUES), shutdown_timeout=30):
        yield


@pytest.fixture(autouse=True)
def _flush_redis() -> Iterator[None]:
    yield
    client = redis_lib.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
