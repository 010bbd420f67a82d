"""Cost of the auth checks: authenticated GET /api/v1/users/me beside unauthenticated GET /healthz,
same gunicorn (as in the Procfile), same run, measured with wrk. Aim: ratio >= 0.6, with a login
token and with an API key alike."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.harness import prepare_database, web_server, wrk_requests_per_second

SECONDS = 8


def main() -> None:
    prepare_database()
    with web_server() as base:
        credentials = {"email": "merchant@example.com", "password": "correct horse battery staple"}
        requests.post(f"{base}/api/v1/auth/register", json=credentials, timeout=10).raise_for_status()
        token = requests.post(f"{base}/api/v1/auth/login", json=credentials, timeout=10).json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        api_key = requests.post(f"{base}/api/v1/api-keys", json={"name": "bench", "scopes": ["read"]}, headers=auth,
                                timeout=10).json()["key"]
        key_auth = {"Authorization": f"Bearer {api_key}"}

        wrk_requests_per_second(f"{base}/healthz", seconds=1)  # warm-up: imports, pool connections
        wrk_requests_per_second(f"{base}/api/v1/users/me", auth, seconds=1)
        wrk_requests_per_second(f"{base}/api/v1/users/me", key_auth, seconds=1)
        baseline = wrk_requests_per_second(f"{base}/healthz", seconds=SECONDS)
        authenticated = wrk_requests_per_second(f"{base}/api/v1/users/me", auth, seconds=SECONDS)
        by_key = wrk_requests_per_second(f"{base}/api/v1/users/me", key_auth, seconds=SECONDS)
    print(f"unauthenticated GET /healthz (ceiling): {baseline:8.1f} req/s")
    print(f"login token     GET /api/v1/users/me:   {authenticated:8.1f} req/s")
    print(f"API key         GET /api/v1/users/me:   {by_key:8.1f} req/s")
    print(f"ratio: {authenticated / baseline:.2f} with a login token, {by_key / baseline:.2f} with an API key "
          "(aim >= 0.6)")


if __name__ == "__main__":
    main()
