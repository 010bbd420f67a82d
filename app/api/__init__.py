"""HTTP API: one blueprint per resource, registered by `register_blueprints`."""
from flask import Flask

from app.extensions import api


def register_blueprints(app: Flask) -> None:
    from app.api import (
        audiences,
        auth,
        campaigns,
        contacts,
        data_sources,
        health,
        ingest,
        tracking,
        users,
    )

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for module in (health, auth, users, data_sources, contacts, campaigns, audiences, ingest, tracking):
        api.register_blueprint(module.blp)
