"""HTTP API: one blueprint per resource, registered by `register_blueprints`."""
from flask import Flask

from app.extensions import api


def register_blueprints(app: Flask) -> None:
    from app.api.blueprint import BoundedRequest, JsonProvider

    app.json = JsonProvider(app)
    app.request_class = BoundedRequest
    from app.api import (
        account_pages,
        audiences,
        auth,
        campaigns,
        contacts,
        conversations,
        data_sources,
        email_hooks,
        health,
        ingest,
        provider_accounts,
        settings,
        short_links,
        suppressions,
        tracking,
        twilio_hooks,
        users,
        whatsapp_hooks,
    )

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for module in (health, auth, users, data_sources, contacts, campaigns, audiences, conversations, ingest, tracking,
                   short_links, twilio_hooks, whatsapp_hooks, email_hooks, provider_accounts, account_pages, settings,
                   suppressions):
        api.register_blueprint(module.blp)
