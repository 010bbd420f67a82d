"""A merchant's sending settings: timezone, quiet hours, frequency caps, UTM and attribution.

Stored as loaded by app.schemas.settings (snake_case keys), one row per merchant, written the first
time a default changes. Readers get the settings in force: the merchant's own, else the defaults.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.extensions import db
from app.models import MerchantSettings

DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "quiet_hours": {},
    "frequency_caps": {},
    "utm": {"enabled": True, "source": "herald"},
    "attribution": {"click_window_days": 5, "open_window_days": 1},
}
PER_CHANNEL = ("quiet_hours", "frequency_caps")
MERGED = ("utm", "attribution")


def get_settings(user_id: uuid.UUID) -> dict[str, Any]:
    return _in_force(db.session.get(MerchantSettings, user_id))


def update_settings(user_id: uuid.UUID, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply validated changes (app.schemas.settings.SettingsUpdateSchema): per channel a value
    replaces that channel's setting and None removes it; `utm` and `attribution` change the fields
    given. The row is locked while it changes, so two changes at once both count."""
    db.session.execute(pg_insert(MerchantSettings).values(userId=user_id).on_conflict_do_nothing())
    row = db.session.scalars(sa.select(MerchantSettings).where(MerchantSettings.user_id == user_id)
                             .with_for_update()).one()
    if "timezone" in changes:
        row.timezone = changes["timezone"]
    for name in PER_CHANNEL:
        if name in changes:
            current = dict(getattr(row, name))
            for channel, value in changes[name].items():
                if value is None:
                    current.pop(channel, None)
                else:
                    current[channel] = value
            setattr(row, name, current)
    for name in MERGED:
        if name in changes:
            setattr(row, name, {**getattr(row, name), **changes[name]})
    db.session.commit()
    return _in_force(row)


def _in_force(row: MerchantSettings | None) -> dict[str, Any]:
    if row is None:
        return {**DEFAULTS, "updated_at": None}
    return {
        "timezone": row.timezone,
        "quiet_hours": row.quiet_hours,
        "frequency_caps": row.frequency_caps,
        "utm": {**DEFAULTS["utm"], **row.utm},
        "attribution": {**DEFAULTS["attribution"], **row.attribution},
        "updated_at": row.updated_at,
    }
