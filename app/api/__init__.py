"""HTTP API: one blueprint per resource, registered by `register_blueprints`."""
from flask import Flask

from app.extensions import api


def register_blueprints(app: Flask) -> None:
    from app.api.blueprint import KEY_SCHEME, LOGIN_SCHEME, BoundedRequest, JsonProvider
    from app.api.openapi import register_docs_assets

    app.json = JsonProvider(app)
    app.request_class = BoundedRequest
    from app.api import (
        account_pages,
        api_keys,
        audiences,
        auth,
        campaigns,
        contacts,
        conversations,
        data_sources,
        email_hooks,
        flows,
        health,
        idempotency,
        ingest,
        provider_accounts,
        sender_pages,
        senders,
        settings,
        short_links,
        suppressions,
        tracking,
        twilio_hooks,
        users,
        webhooks,
        whatsapp_hooks,
    )

    app.after_request(idempotency.record_response)
    register_docs_assets(app)
    api.spec.components.security_scheme(LOGIN_SCHEME, {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A login access token (POST /api/v1/auth/login): every route.",
    })
    api.spec.components.security_scheme(KEY_SCHEME, {
        "type": "http", "scheme": "bearer", "bearerFormat": "hk_live_...",
        "description": "An API key (POST /api/v1/api-keys): the routes whose requirement names a scope it holds.",
    })
    for module in (health, auth, users, api_keys, data_sources, contacts, campaigns, flows, audiences, conversations, ingest,
                   tracking, short_links, twilio_hooks, whatsapp_hooks, email_hooks, provider_accounts, account_pages, settings,
                   suppressions, webhooks, senders, sender_pages):
        api.register_blueprint(module.blp)
