"""HTTP API: one blueprint per resource, registered by `register_blueprints`."""
from flask import Flask

from app.extensions import api


def register_blueprints(app: Flask) -> None:
    from app.api.health import blp as health_blp

    api.register_blueprint(health_blp)
