"""UTM tags on the links a campaign's messages carry: `utm_source` (the merchant's setting, default
"herald"), `utm_medium` (the channel: email, sms, whatsapp, push) and `utm_campaign` (a slug of the
campaign's name).

The merchant's `utm` setting ({enabled, source}; on by default) applies unless the campaign's config
says otherwise: `"utm": false` (or `{"enabled": false}`) leaves its links untagged, `true` tags them
whatever the merchant's default, and `{"source": ..., "campaign": ...}` overrides the source and the
name's slug (app.schemas.campaigns validates it). A parameter the URL already has is never replaced,
and the rest of the URL (its other parameters, their order and spelling, the fragment) is kept
exactly as written.
"""
from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

import sqlalchemy as sa
from sqlalchemy import orm

from app.extensions import db
from app.models import Campaign, MerchantSettings
from app.services.settings import DEFAULTS

SLUG_MAX = 100
_NOT_WORD = re.compile(r"[\W_]+")


def slug(name: str) -> str:
    """`Été Sale – 20%!` → `ete-sale-20`: lower case, accents dropped, other runs of non-letters
    as one hyphen. A name with no letter or digit at all becomes `campaign`."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    return _NOT_WORD.sub("-", plain).strip("-")[:SLUG_MAX].rstrip("-") or "campaign"


def tagged(url: str, tags: Mapping[str, str]) -> str:
    """`url` with each of `tags` it lacks appended to its query, before any fragment."""
    base, hash_mark, fragment = url.partition("#")
    query = base.partition("?")[2]
    present = {key.lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
    missing = {key: value for key, value in tags.items() if key not in present}
    if not missing:
        return url
    joint = "?" if "?" not in base else ("" if base.endswith(("?", "&")) else "&")
    return f"{base}{joint}{urlencode(missing)}{hash_mark}{fragment}"


def _campaign_choice(value: object) -> dict[str, object]:
    """What a campaign's config says about UTM; a value stored before it was validated and of the
    wrong kind says nothing."""
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict):
        return {}
    kinds = {"enabled": bool, "source": str, "campaign": str}
    return {key: value[key] for key, kind in kinds.items() if isinstance(value.get(key), kind) and value[key] != ""}


def campaign_tags(campaign_id: uuid.UUID, channel_type: str) -> dict[str, str]:
    """The tags for this campaign's links on this channel; empty when UTM tagging is off.

    Read on a connection of its own (as links are stored): a channel adapter must leave the send
    engine's transaction alone.
    """
    with orm.Session(db.engine) as session:
        row = session.execute(
            sa.select(Campaign.name, Campaign.config["utm"], MerchantSettings.utm)
            .outerjoin(MerchantSettings, MerchantSettings.user_id == Campaign.user_id)
            .where(Campaign.id == campaign_id)
        ).one_or_none()
    if row is None:
        return {}
    name, campaign_utm, merchant_utm = row
    utm = {**DEFAULTS["utm"], **(merchant_utm or {}), **_campaign_choice(campaign_utm)}
    if not utm["enabled"]:
        return {}
    return {"utm_source": utm["source"], "utm_medium": channel_type, "utm_campaign": utm.get("campaign") or slug(name)}
