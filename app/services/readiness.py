"""Dependency checks behind /readyz."""
from __future__ import annotations

import logging

import redis
import sqlalchemy as sa

from app.extensions import db

log = logging.getLogger(__name__)


def check_dependencies(redis_url: str) -> dict[str, str]:
    return {"database": _check_database(), "redis": _check_redis(redis_url)}


def _check_database() -> str:
    try:
        db.session.execute(sa.text("SELECT 1"))
        return "ok"
    except sa.exc.SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return "unreachable"
    finally:
        db.session.rollback()


def _check_redis(url: str) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        return "ok"
    except redis.RedisError as exc:
        log.warning("readiness: redis unreachable: %s", type(exc).__name__)
        return "unreachable"
    finally:
        client.close()
