"""Liveness and readiness probes."""
from __future__ import annotations

from flask import current_app

from app.api.blueprint import HeraldBlueprint
from app.errors import UNAVAILABLE_RETRY_AFTER
from app.services import readiness

blp = HeraldBlueprint("health", __name__, description="Process liveness and dependency readiness")


@blp.route("/healthz")
@blp.response(200)
def healthz():
    """The process is up (no dependency is touched)."""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.response(200)
@blp.alt_response(503, description="A dependency is unreachable; `checks` names it")
def readyz():
    """PostgreSQL and Redis (the broker) are reachable."""
    checks = readiness.check_dependencies(current_app.config["HERALD_SETTINGS"].redis_url)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return (body, 200) if ready else (body, 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
