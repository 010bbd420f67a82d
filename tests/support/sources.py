"""Data sources built directly in the database (encrypted config, hashed ingest key), and signed
provider requests, for ingestion and processing tests."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from app.extensions import db
from app.models import DataSource, IngestKey, User
from app.security import opaque_tokens
from app.security.secret_box import encrypt_fields
from app.sources.configs import SECRET_FIELDS

WEBHOOK_SECRET = "shpss_test_webhook_secret"
CONFIGS: dict[str, dict[str, Any]] = {
    "shopify": {"shopDomain": "herald-test.myshopify.com", "accessToken": "shpat_test_token",
                "webhookSecret": WEBHOOK_SECRET, "apiVersion": "2025-10", "backfillDays": 90},
    "facebook_pixel": {"pixelId": "123456789", "accessToken": "meta_test_token", "apiVersion": "v21.0"},
    "gtm": {"containerId": "GTM-ABC1234", "accountId": "6001234567", "apiContainerId": "42",
            "accessToken": "gtm_test_token"},
}


def make_merchant(email: str | None = None) -> User:
    user = User(email=email or f"merchant-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
    db.session.add(user)
    db.session.flush()
    return user


def make_source(user: User, source_type: str, status: str = "active") -> tuple[DataSource, str | None]:
    """A committed source and, for pixel/GTM sources, its plain ingest key."""
    source = DataSource(user_id=user.id, source_type=source_type, name=f"{source_type} source", status=status,
                        config=encrypt_fields(CONFIGS[source_type], SECRET_FIELDS[source_type]))
    db.session.add(source)
    db.session.flush()
    key = None
    if source_type != "shopify":
        key = "hik_" + opaque_tokens.new_secret()
        db.session.add(IngestKey(data_source_id=source.id, key_hash=opaque_tokens.hash_secret(key)))
    db.session.commit()
    return source, key


def shopify_headers(body: bytes, topic: str = "orders/create", webhook_id: str | None = None,
                    secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "herald-test.myshopify.com",
    }


def shopify_order(order_id: int = 820982911946154508, email: str = "jon@example.com", total: str = "199.00",
                  customer_id: int = 115310627314723954) -> dict[str, Any]:
    return {
        "id": order_id, "email": email, "total_price": total, "currency": "USD",
        "created_at": "2026-11-20T10:00:00-05:00",
        "customer": {"id": customer_id, "email": email, "first_name": "Jon", "last_name": "Snow",
                     "phone": "+16135551212"},
        "line_items": [{"product_id": 632910392, "quantity": 1, "price": total}],
        "billing_address": {"country_code": "US"},
    }


def capi_event(name: str = "Purchase", event_id: str | None = None, email_sha256: str | None = None,
               age_seconds: int = 60, **extra: Any) -> dict[str, Any]:
    event = {"event_name": name, "event_time": int(time.time()) - age_seconds, "action_source": "website",
             "user_data": {"client_ip_address": "203.0.113.1"}, "custom_data": {"value": 12.5, "currency": "usd"}}
    if event_id:
        event["event_id"] = event_id
    if email_sha256:
        event["user_data"]["em"] = [email_sha256]
    event.update(extra)
    return event


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()
