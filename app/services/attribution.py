"""Attribution: an order is credited to the message its contact last clicked or opened before it.

An `order_placed` event by a contact is credited to the most recent touch in its windows: a click
within the merchant's `attribution.click_window_days` (default 5) before the order, or an open
within `open_window_days` (default 1; 0: opens never count). Windows are measured back from the
event's own time (`occurredAt`), so an order that arrives late is judged by when it was placed. A
click on an email also stamps its open, so that message is a touch on both counts; the latest
moment wins, and a click wins a tie.

Once per order: the credit's key is the merchant's order id (`order:<orderId>`, or
`event:<dataEventId>` for an order event that names none), unique per merchant, so the same order
coming again (a retried webhook, the pixel's Purchase beside the shop's order) credits nothing
more. An order with no touch in its windows is credited to nothing.

Processing credits a whole batch of events in one INSERT ... SELECT: per order, two index range
scans (the contact's latest click and latest open, ix_deliveries_contact_clicked / _opened).
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from app.extensions import db, rowcount
from app.models import Attribution, Delivery
from app.services import bulk_sql
from app.services.prepared_statements import PreparedStatement
from app.services.settings import DEFAULTS

ORDER_EVENT = "order_placed"
# ISO 4217 currencies whose minor unit is not the cent; amounts are shown to their minor unit.
MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}

_CREDIT = PreparedStatement("herald_credit_orders", sa.text(
    """
    INSERT INTO attributions ("userId", "orderKey", "contactId", "dataEventId", "occurredAt", revenue, currency,
                              "deliveryId", "campaignId", "channelId", "channelType", touch, "touchedAt")
    SELECT DISTINCT ON (o."userId", o."orderKey")
           o."userId", o."orderKey", o."contactId", o."dataEventId", o."occurredAt", o.revenue, o.currency,
           t.id, t."campaignId", t."channelId", t."channelType", t.touch, t.at
    FROM jsonb_to_recordset(CAST(:orders AS jsonb)) AS o("userId" uuid, "orderKey" text, "contactId" uuid,
                                                        "dataEventId" uuid, "occurredAt" timestamp,
                                                        revenue numeric, currency text)
    LEFT JOIN merchant_settings AS s ON s."userId" = o."userId"
    CROSS JOIN LATERAL (
        SELECT make_interval(days => COALESCE(CAST(s.attribution ->> 'click_window_days' AS int), :click_days))
                   AS click_window,
               make_interval(days => COALESCE(CAST(s.attribution ->> 'open_window_days' AS int), :open_days))
                   AS open_window
    ) AS w
    CROSS JOIN LATERAL (
        SELECT * FROM (
            (SELECT d.id, d."campaignId", d."channelId", d."channelType", 'click' AS touch, d."clickedAt" AS at
             FROM deliveries AS d
             WHERE d."contactId" = o."contactId" AND d."clickedAt" <= o."occurredAt"
               AND d."clickedAt" > o."occurredAt" - w.click_window
             ORDER BY d."clickedAt" DESC LIMIT 1)
            UNION ALL
            (SELECT d.id, d."campaignId", d."channelId", d."channelType", 'open' AS touch, d."openedAt" AS at
             FROM deliveries AS d
             WHERE d."contactId" = o."contactId" AND d."openedAt" <= o."occurredAt"
               AND d."openedAt" > o."occurredAt" - w.open_window
             ORDER BY d."openedAt" DESC LIMIT 1)
        ) AS touches
        ORDER BY at DESC, touch  -- 'click' before 'open' at the same moment
        LIMIT 1
    ) AS t
    ORDER BY o."userId", o."orderKey", o."occurredAt"
    ON CONFLICT ("userId", "orderKey") DO NOTHING
    """
))


def credit_orders(activities: Iterable[dict[str, Any]]) -> int:
    """Credit the orders among a processed batch's activity rows (as event_processing writes them);
    the number credited. Runs in the caller's transaction."""
    orders = [_order(activity) for activity in activities if activity["eventType"] == ORDER_EVENT]
    if not orders:
        return 0
    return rowcount(_CREDIT.execute_in(db.session, db.engine, {
        "orders": bulk_sql.to_json(orders),
        "click_days": DEFAULTS["attribution"]["click_window_days"],
        "open_days": DEFAULTS["attribution"]["open_window_days"],
    }))


def _order(activity: dict[str, Any]) -> dict[str, Any]:
    properties = activity["properties"]
    order_id = properties.get("orderId")
    return {
        "userId": activity["userId"],
        "orderKey": f"order:{order_id}" if order_id else f"event:{activity['dataEventId']}",
        "contactId": activity["contactId"],
        "dataEventId": activity["dataEventId"],
        "occurredAt": activity["occurredAt"],
        "revenue": properties.get("value"),  # a float as the event gave it; stored as numeric
        "currency": properties.get("currency"),
    }


# --- What a campaign earned --------------------------------------------------------------------

@dataclass(frozen=True)
class Money:
    currency: str | None  # None: the order events named no currency
    amount: str  # a decimal string, to the currency's minor unit


@dataclass(frozen=True)
class Credited:
    """Orders credited and their revenue by currency (orders without a value count, adding none)."""

    orders: int = 0
    revenue: dict[str | None, Decimal] = field(default_factory=dict)

    @property
    def amounts(self) -> list[Money]:
        return [Money(currency, _shown(currency, amount)) for currency, amount
                in sorted(self.revenue.items(), key=lambda item: (item[0] is None, item[0] or ""))]

    @classmethod
    def total(cls, parts: Iterable[Credited]) -> Credited:
        orders, revenue = 0, defaultdict[str | None, Decimal](Decimal)
        for part in parts:
            orders += part.orders
            for currency, amount in part.revenue.items():
                revenue[currency] += amount
        return cls(orders, dict(revenue))


def credited_by_variant(campaign_id: uuid.UUID) -> dict[tuple[uuid.UUID, int | None], Credited]:
    """The campaign's credits per channel and A/B variant (None: no test), grouped through each
    credit's delivery."""
    rows = db.session.execute(
        sa.select(Delivery.channel_id, Delivery.variant, Attribution.currency, sa.func.count(Attribution.id),
                  sa.func.sum(Attribution.revenue))
        .join(Delivery, Delivery.id == Attribution.delivery_id)
        .where(Attribution.campaign_id == campaign_id)
        .group_by(Delivery.channel_id, Delivery.variant, Attribution.currency)
    )
    orders: dict[tuple[uuid.UUID, int | None], int] = defaultdict(int)
    revenue: dict[tuple[uuid.UUID, int | None], dict[str | None, Decimal]] = defaultdict(dict)
    for channel_id, variant, currency, count, amount in rows:
        orders[channel_id, variant] += count
        if amount is not None:
            revenue[channel_id, variant][currency] = amount
    return {key: Credited(count, revenue[key]) for key, count in orders.items()}


def credited_by_channel(campaign_id: uuid.UUID,
                        by_variant: dict[tuple[uuid.UUID, int | None], Credited] | None = None,
                        ) -> dict[uuid.UUID, Credited]:
    """The campaign's credits per channel (from `credited_by_variant`'s answer when given)."""
    parts: dict[uuid.UUID, list[Credited]] = defaultdict(list)
    for (channel_id, _), credited in (by_variant if by_variant is not None
                                      else credited_by_variant(campaign_id)).items():
        parts[channel_id].append(credited)
    return {channel_id: Credited.total(credits) for channel_id, credits in parts.items()}


def revenue_by_variant(channel_id: uuid.UUID) -> dict[int, float]:
    """Attributed revenue per A/B variant of a channel, every currency's amounts added as numbers
    (what an A/B test's `attributed_revenue` metric compares)."""
    rows = db.session.execute(
        sa.select(Delivery.variant, sa.func.sum(Attribution.revenue))
        .join(Delivery, Delivery.id == Attribution.delivery_id)
        .where(Delivery.channel_id == channel_id, Delivery.variant.is_not(None))
        .group_by(Delivery.variant))
    return {variant: float(amount or 0) for variant, amount in rows if variant is not None}


def _shown(currency: str | None, amount: Decimal) -> str:
    places = MINOR_UNITS.get(currency or "", 2)
    return str(amount.quantize(Decimal(1).scaleb(-places)))
