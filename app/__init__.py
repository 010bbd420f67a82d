"""Herald's Flask application factory. It only wires: configuration, extensions, routes, handlers."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import redis
from dotenv import load_dotenv
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import models  # noqa: F401  (metadata complete before Migrate sees it)
from app.api import register_blueprints
from app.api.openapi import HeraldSpecPlugin
from app.cli import register_cli
from app.config import load_settings
from app.errors import register_error_handlers
from app.extensions import api, db, jwt, limiter, migrate, retry_after_only_when_refused
from app.jobs import celery_init_app
from app.metrics import register_metrics
from app.request_log import configure_logging, register_request_id
from app.security.access_tokens import register_jwt_handlers

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    if environ is None:
        load_dotenv()  # development convenience; real environment variables win
    settings = load_settings(environ)

    app = Flask(__name__)
    app.config.update(settings.flask_config())
    if settings.proxy_count:
        # Trust exactly the configured number of proxies for the client address, never more.
        # Flask's documented way to wrap its WSGI callable, which the typing knows only as a method.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count)

    configure_logging()
    register_extensions(app)
    register_request_id(app)
    register_metrics(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_cli(app)
    celery_init_app(app)
    return app


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    jwt.init_app(app)
    register_jwt_handlers(jwt)
    # Before the limiter: after-request hooks run last-registered first, so this one sees its headers.
    app.after_request(retry_after_only_when_refused)
    limiter.init_app(app)
    api.init_app(app, spec_kwargs={"extra_plugins": [HeraldSpecPlugin()]})
    app.extensions["redis"] = redis.Redis.from_url(
        app.config["HERALD_SETTINGS"].redis_url, socket_connect_timeout=2, socket_timeout=5
    )
