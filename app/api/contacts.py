"""Contacts: the merchant's customers."""
from __future__ import annotations

from app.api.blueprint import ApiBlueprint

blp = ApiBlueprint("contacts", __name__, url_prefix="/api/v1/contacts", description="The merchant's contacts")
