"""Per-type configuration of data sources: which fields exist and which are secrets.

Secrets are encrypted at rest (app.security.secret_box) and never returned by the API.
"""
from __future__ import annotations

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "shopify": ("accessToken", "webhookSecret"),
    "facebook_pixel": ("accessToken",),
    "gtm": ("accessToken",),
}
