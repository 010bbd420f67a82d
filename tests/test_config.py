"""Configuration: missing secrets stop start-up by name; DATABASE_URL forms all reach psycopg2."""
from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from app.config import ConfigError, load_settings, normalize_database_url
from app.extensions import db
from tests.conftest import TEST_DATABASE_URL, TEST_ENV, make_app


@pytest.mark.parametrize("name", ["SECRET_KEY", "JWT_SECRET_KEY", "DATA_ENCRYPTION_KEY"])
def test_missing_secret_is_named(name):
    env = {k: v for k, v in TEST_ENV.items() if k != name}
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


def test_production_requires_service_addresses():
    env = {k: v for k, v in TEST_ENV.items() if k not in ("SMTP_URL", "PUBLIC_BASE_URL")}
    env["HERALD_ENV"] = "production"
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL, SMTP_URL"):
        load_settings(env)


def test_the_adjustable_clock_is_refused_in_production():
    with pytest.raises(ConfigError, match="ADJUSTABLE_CLOCK"):
        load_settings({**TEST_ENV, "HERALD_ENV": "production", "ADJUSTABLE_CLOCK": "1"})
    assert load_settings({**TEST_ENV, "ADJUSTABLE_CLOCK": ""}).adjustable_clock is False


def test_webhooks_may_reach_private_networks_only_outside_production():
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOWED_PRIVATE_NETWORKS"):
        load_settings({**TEST_ENV, "HERALD_ENV": "production", "ADJUSTABLE_CLOCK": ""})
    production = load_settings({**TEST_ENV, "HERALD_ENV": "production", "ADJUSTABLE_CLOCK": "",
                                "WEBHOOK_ALLOWED_PRIVATE_NETWORKS": ""})
    assert production.webhook_allowed_private_networks == ()
    assert [str(n) for n in load_settings(TEST_ENV).webhook_allowed_private_networks] == ["127.0.0.1/32"]
    with pytest.raises(ConfigError, match="WEBHOOK_RETRY_HOURS"):
        load_settings({**TEST_ENV, "WEBHOOK_RETRY_HOURS": "0"})


def test_development_defaults_point_at_localhost():
    env = {k: TEST_ENV[k] for k in ("SECRET_KEY", "JWT_SECRET_KEY", "DATA_ENCRYPTION_KEY")}
    settings = load_settings(env)
    assert "127.0.0.1" in settings.database_url and "127.0.0.1" in settings.redis_url
    assert settings.public_base_url.startswith("http://localhost")


@pytest.mark.parametrize(
    "value, message",
    [("JWT_SECRET_KEY", "at least 32"), ("DATA_ENCRYPTION_KEY", "32 bytes"), ("PROXY_COUNT", "integer"),
     ("LOGIN_RATE_LIMIT_ACCOUNT", "5 per minute"), ("PUSH_ALLOWED_PRIVATE_NETWORKS", "IP addresses or networks")],
)
def test_malformed_values_are_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({**TEST_ENV, value: "short"})


@pytest.mark.parametrize("value", ["", "Herald", "Herald <>", "a@b.test, c@d.test", "Herald <no reply@herald.test>",
                                   "Herald <no-reply@>"])
def test_a_mail_from_that_is_not_one_address_is_refused(value):
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        load_settings({**TEST_ENV, "MAIL_FROM": value})


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_database_url_forms_use_psycopg2(scheme):
    rest = TEST_DATABASE_URL.split("://", 1)[1]
    assert normalize_database_url(f"{scheme}://{rest}") == f"postgresql+psycopg2://{rest}"
    app = make_app(DATABASE_URL=f"{scheme}://{rest}")
    with app.app_context():
        assert db.engine.dialect.driver == "psycopg2"
        assert db.session.execute(sa.text("SELECT current_setting('TimeZone')")).scalar() == "UTC"
        db.session.remove()
        db.engine.dispose()


def test_non_postgres_url_is_refused():
    with pytest.raises(ConfigError, match="PostgreSQL"):
        normalize_database_url("mysql://root@localhost/x")


def test_start_up_without_secrets_exits_naming_the_variable(tmp_path):
    """The real entry point (`flask`) stops with the variable's name, not a traceback deep inside."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app()"],
        cwd=str(tmp_path), env={**env, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent.parent)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "SECRET_KEY" in proc.stderr
