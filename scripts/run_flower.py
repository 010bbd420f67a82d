"""Start Flower only behind a password (`python scripts/run_flower.py`).

Flower reads FLOWER_BASIC_AUTH, FLOWER_PORT and FLOWER_ADDRESS itself; this wrapper refuses to start
it open. It listens on localhost unless FLOWER_ADDRESS says otherwise, because Flower's /metrics and
/healthcheck skip its auth.
"""
from __future__ import annotations

import os
import sys


def basic_auth_problem(value: str) -> str | None:
    pairs = [p for p in value.split(",") if p]
    if not pairs:
        return "FLOWER_BASIC_AUTH is not set: refusing to start Flower without a password"
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not (user and sep and password):
            return "FLOWER_BASIC_AUTH must be user:password (comma-separated for several users)"
    return None


def main() -> None:
    problem = basic_auth_problem(os.environ.get("FLOWER_BASIC_AUTH", ""))
    if problem:
        sys.exit(problem)
    os.environ.setdefault("FLOWER_PORT", "5555")
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "workers", "flower"])


if __name__ == "__main__":
    main()
